package org.unibus

import java.io.File
import java.nio.file.Files

/**
 * `unibus-liar`: records real replies of membershipd as [identity], then answers that
 * identity's control-plane requests on a nats-server of its own, replaying epoch [rollback] of a
 * room as its latest and naming an impostor as the owner of [swapOwner].
 *
 * The binary comes from `$UNIBUS_LIAR`, or the repository's `target/debug/unibus-liar`
 * (`scripts/test.sh` builds it). It runs until its stdin closes ([close]).
 */
class Liar(
    identity: Identity,
    natsUrls: List<String>,
    rollback: Pair<String, ULong>? = null,
    swapOwner: String? = null,
) : AutoCloseable {
    private val repo = File("../..").canonicalFile
    private val log: File = Files.createTempFile("unibus-liar", ".log").toFile()
    private val process: Process

    /** Where a session connects to be lied to. */
    val natsUrl: String

    /** The impostor's signing key, hex. */
    val impostor: String

    init {
        val command = mutableListOf(binary("UNIBUS_LIAR", "target/debug/unibus-liar"))
        natsUrls.forEach { command += listOf("--cluster", it) }
        rollback?.let { command += listOf("--rollback", "${it.first}:${it.second}") }
        swapOwner?.let { command += listOf("--swap-owner", it) }
        val builder = ProcessBuilder(command).redirectError(log)
        builder.environment()["NATS_SERVER"] = binary("NATS_SERVER", ".tools/bin/nats-server")
        process = builder.start()
        val secret = identity.exportSecretBytes().joinToString("") { "%02x".format(it) }
        process.outputStream.write("$secret\n".toByteArray())
        process.outputStream.flush()
        val line = process.inputStream.bufferedReader().readLine()
        if (line == null) {
            close()
            error("unibus-liar did not start: ${log.readText()}")
        }
        natsUrl = field(line, "nats_url")
        impostor = field(line, "impostor")
    }

    private fun field(json: String, name: String): String =
        checkNotNull(Regex("\"$name\"\\s*:\\s*\"([^\"]+)\"").find(json)) { "no $name in $json" }
            .groupValues[1]

    private fun binary(variable: String, default: String): String {
        val file = System.getenv(variable)?.let(::File) ?: File(repo, default)
        check(file.isFile) { "$file is missing: run scripts/test.sh, or set \$$variable" }
        return file.path
    }

    override fun close() {
        runCatching { process.outputStream.close() }
        if (!process.waitFor(30, java.util.concurrent.TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor()
        }
        log.delete()
    }
}
