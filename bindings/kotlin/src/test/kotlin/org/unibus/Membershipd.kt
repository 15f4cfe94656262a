package org.unibus

import java.io.File
import java.nio.file.Files

/**
 * A real `membershipd serve` on the embedded default (SQLite and its own nats-server) in a
 * temporary directory, with its admin CLI. It binds port 0 (the OS picks free loopback ports, so
 * parallel servers never race for one) and reports where it serves in `<data>/serving.json`.
 *
 * The binaries come from `$UNIBUS_MEMBERSHIPD` and `$NATS_SERVER`, or from the repository's
 * `target/debug/membershipd` and `.tools/bin/nats-server` (`scripts/test.sh` provides both).
 */
class Membershipd : AutoCloseable {
    private val repo = File("../..").canonicalFile
    private val data: File = Files.createTempDirectory("membershipd").toFile()
    private val binary = binary("UNIBUS_MEMBERSHIPD", "target/debug/membershipd")
    private val natsServer = binary("NATS_SERVER", ".tools/bin/nats-server")
    private val process: Process

    /** The base URL of its HTTP API (and of its invite links), as it reported. */
    val publicUrl: String

    init {
        process = ProcessBuilder(
            binary, "--data-dir", data.path, "--nats-server", natsServer,
            "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "serve",
        )
            .redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .redirectError(File(data, "membershipd.log"))
            .start()
        publicUrl = waitServing()
    }

    private fun binary(variable: String, default: String): String {
        val file = System.getenv(variable)?.let(::File) ?: File(repo, default)
        check(file.isFile) { "$file is missing: run scripts/test.sh, or set \$$variable" }
        return file.path
    }

    private fun command(vararg args: String): List<String> =
        listOf(binary, "--data-dir", data.path, "--public-url", publicUrl) + args

    /** Waits until this process writes serving.json (an earlier one's names another pid). */
    private fun waitServing(): String {
        val report = File(data, "serving.json")
        val deadline = System.nanoTime() + 60_000_000_000L
        while (System.nanoTime() < deadline) {
            check(process.isAlive) { "membershipd exited: see ${File(data, "membershipd.log")}" }
            val text = runCatching { report.readText() }.getOrDefault("")
            val pid = Regex("\"pid\"\\s*:\\s*(\\d+)").find(text)?.groupValues?.get(1)
            val url = Regex("\"public_url\"\\s*:\\s*\"([^\"]+)\"").find(text)?.groupValues?.get(1)
            if (pid == process.pid().toString() && url != null) return url
            Thread.sleep(20)
        }
        error("membershipd did not serve within 60 s")
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
