// Quickstart: the Kotlin SDK from invite link to room key, as an app uses it.
//
//     membershipd invite create    # twice: one link for the room owner, one for the member
//
// then call `quickstart(ownerLink, memberLink)` (the Kotlin binding tests run it against a real
// membershipd; see bindings/kotlin). Both people redeem their invites with fresh identities and
// log in to the cluster with their own keys. The owner creates a room, adds the member and
// rekeys; the member sees each change through a Flow and opens the keys of epochs 1 and 2; both
// send a message and the member reads them back, opened and verified; once removed, the member
// cannot open epoch 3. A real app keeps `exportSecretBytes()` and the
// registration in the Android Keystore and reconnects with them instead of registering again.
package org.unibus.examples

import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.unibus.Identity
import org.unibus.InviteLink
import org.unibus.MessagePage
import org.unibus.Session
import org.unibus.SessionException
import org.unibus.Updates
import org.unibus.register
import org.unibus.subscribeUpdates

/** Redeems the link with a fresh identity and logs in. */
suspend fun join(linkText: String): Pair<Identity, Session> {
    val me = Identity.generate()
    val registration = InviteLink.parse(linkText).use { register(it, me) }
    val session = Session.connect(me, registration.natsUrls)
    println("registered and logged in as ${me.signPublicKey()}")
    return me to session
}

private suspend fun Updates.expectUpdate() {
    println("  member sees ${withTimeout(10_000) { flow.first() }}")
}

/** What the member read back (the bodies, in order), and the epoch at which it was refused. */
data class Outcome(val read: List<String>, val refused: ULong)

/** The whole story. */
suspend fun quickstart(ownerLink: String, memberLink: String): Outcome {
    val (_, owner) = join(ownerLink)
    val (memberId, member) = join(memberLink)
    val room = "quickstart-" + memberId.signPublicKey().take(8)
    val refused: ULong
    val read = mutableListOf<String>()
    member.subscribeUpdates().use { updates ->
        owner.createRoom(room)
        owner.addMember(room, memberId.signPublicKey())
        updates.expectUpdate()

        repeat(2) {
            val sealed = owner.rekey(room)
            updates.expectUpdate()
            val opened = member.roomKey(room)
            val same = opened.key.exposeBytes().contentEquals(sealed.key.exposeBytes())
            println("  epoch ${opened.epoch}: member opened the owner's key: $same")
        }

        val text = "text/plain; charset=utf-8"
        owner.send(room, "welcome".toByteArray(), text)
        val sent = member.send(room, "thanks".toByteArray(), text)
        println("  member sent message ${sent.id} at ${sent.position}")
        for (received in member.messages(room, MessagePage.Latest(10u)).messages) {
            val message = received.message ?: error("a message could not be read: ${received.unreadable}")
            read += message.body.decodeToString()
            println("  member reads \"${read.last()}\" from ${message.sender}")
        }

        owner.removeMember(room, memberId.signPublicKey())
        updates.expectUpdate()
        refused = owner.rekey(room).epoch
        try {
            member.roomKey(room)
            error("the removed member opened a key")
        } catch (e: SessionException.NotMember) {
            println("  epoch $refused: member refused")
        }
    }
    owner.closeSession()
    member.closeSession()
    return Outcome(read, refused)
}

fun main(args: Array<String>) = runBlocking {
    require(args.size == 2) { "usage: Quickstart OWNER_INVITE_LINK MEMBER_INVITE_LINK" }
    quickstart(args[0], args[1])
    Unit
}
