package org.unibus

import java.io.File
import java.net.HttpURLConnection
import java.net.ServerSocket
import java.net.URI
import java.nio.file.Files

/**
 * A real `membershipd serve` on the embedded default (SQLite and its own nats-server) in a
 * temporary directory on loopback ports, with its admin CLI.
 *
 * The binaries come from `$UNIBUS_MEMBERSHIPD` and `$NATS_SERVER`, or from the repository's
 * `target/debug/membershipd` and `.tools/bin/nats-server` (`scripts/test.sh` provides both).
 */
class Membershipd : AutoCloseable {
    private val repo = File("../..").canonicalFile
    private val data: File = Files.createTempDirectory("membershipd").toFile()
    private val httpPort = freePort()
    private val natsPort = freePort()
    private val binary = binary("UNIBUS_MEMBERSHIPD", "target/debug/membershipd")
    private val natsServer = binary("NATS_SERVER", ".tools/bin/nats-server")
    private val process: Process

    init {
        process = ProcessBuilder(command("serve"))
            .redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .redirectError(File(data, "membershipd.log"))
            .start()
        waitHealthy()
    }

    private fun binary(variable: String, default: String): String {
        val file = System.getenv(variable)?.let(::File) ?: File(repo, default)
        check(file.isFile) { "$file is missing: run scripts/test.sh, or set \$$variable" }
        return file.path
    }

    private fun freePort(): Int = ServerSocket(0).use { it.localPort }

    private fun command(vararg args: String): List<String> = listOf(
        binary,
        "--data-dir", data.path,
        "--listen", "127.0.0.1:$httpPort",
        "--nats-listen", "127.0.0.1:$natsPort",
        "--nats-server", natsServer,
    ) + args

    private fun waitHealthy() {
        val deadline = System.nanoTime() + 60_000_000_000L
        while (System.nanoTime() < deadline) {
            check(process.isAlive) { "membershipd exited: see ${File(data, "membershipd.log")}" }
            val healthy = runCatching {
                val connection = URI("http://127.0.0.1:$httpPort/healthz").toURL()
                    .openConnection() as HttpURLConnection
                connection.connectTimeout = 1000
                connection.readTimeout = 1000
                connection.responseCode == 200
            }.getOrDefault(false)
            if (healthy) return
            Thread.sleep(50)
        }
        error("membershipd did not become healthy within 60 s")
    }

    /** Runs an admin command on the same data directory and returns its JSON output. */
    fun cli(vararg args: String): String {
        val run = ProcessBuilder(command("--json", *args)).redirectErrorStream(false).start()
        val output = run.inputStream.bufferedReader().readText()
        check(run.waitFor() == 0) { "membershipd ${args.toList()} failed: $output" }
        return output
    }

    /** A fresh single-use invite link. */
    fun invite(): String {
        val link = Regex("\"link\"\\s*:\\s*\"([^\"]+)\"").find(cli("invite", "create"))
        return checkNotNull(link) { "no link in the CLI output" }.groupValues[1]
    }

    override fun close() {
        process.destroyForcibly().waitFor()
        data.deleteRecursively()
    }
}
