// Element's encryption stack (matrix-js-sdk with its Rust crypto) on two federating servers:
// Alice on the appliance, Bob on Synapse, each on their own server's client API. Alice creates an
// encrypted room and invites Bob; each decrypts the other's message. Then Alice creates an
// encrypted DM the way Element does (`is_direct` invite, trusted_private_chat) and the same
// holds. Every decrypted plaintext is compared, so a message that arrives but cannot be
// decrypted (keys not queried or claimed across servers, Megolm session not delivered as a
// to-device EDU) fails the run, as does any sync error.
//
//   node federation_e2ee.mjs <alice_base_url> <alice_user_id> <bob_base_url> <bob_user_id> <password>
//
// Both servers' certificates come from a test CA that Node trusts through NODE_EXTRA_CA_CERTS.
import * as sdk from "matrix-js-sdk";

import { eventually as eventuallyWithin, fail, startedClient, waitFor as waitForEvent } from "./support.mjs";

const [aliceUrl, aliceId, bobUrl, bobId, password] = process.argv.slice(2);
// Federation round trips (invites, joins, key queries, to-device EDUs) take longer than anything
// on one server.
const TIMEOUT_MS = 60000;

function waitFor(emitter, event, predicate, what) {
    return waitForEvent(emitter, event, predicate, what, TIMEOUT_MS);
}

function eventually(check, what) {
    return eventuallyWithin(check, what, TIMEOUT_MS);
}

async function loggedIn(baseUrl, userId) {
    const client = await startedClient(
        baseUrl, userId, password, "js-sdk federation e2ee test", TIMEOUT_MS, { crypto: true });
    console.log(`ok: ${userId} logged in on ${baseUrl} (device ${client.getDeviceId()}), Rust crypto started`);
    return client;
}

// Resolves with the decrypted body of the next encrypted message from `sender` in `roomId` at
// `client`, once the Megolm session has arrived (it may come in a later sync than the message,
// since the message and the to-device EDU travel separately), and fails unless it is `expected`.
function decryptedBody(client, roomId, sender, expected, what) {
    const arrived = waitFor(client, sdk.RoomEvent.Timeline,
        (e, room) => room?.roomId === roomId && e.getSender() === sender && e.getWireType() === "m.room.encrypted",
        what);
    return (async () => {
        const [event] = await arrived;
        await eventually(async () => {
            if (event.isDecryptionFailure()) await client.decryptEventIfNeeded(event);
            return !event.isBeingDecrypted() && !event.isDecryptionFailure() && event.getClearContent() !== null;
        }, () => `${what}: decrypted (${event.isDecryptionFailure()
            ? `decryption failed: ${event.decryptionFailureReason}` : "still being decrypted"})`);
        const body = event.getContent().body;
        if (body !== expected) fail(`${what}: decrypted to ${JSON.stringify(body)}, expected ${JSON.stringify(expected)}`);
        const info = await client.getCrypto().getEncryptionInfoForEvent(event);
        if (!info) fail(`${what}: no encryption info`);
        console.log(`ok: ${what} decrypted to ${JSON.stringify(body)}`);
        return body;
    })();
}

// Alice invites Bob to `roomId` (made by `createRoom`), Bob joins over federation, and each then
// decrypts the other's message. Returns who invited Bob to a DM, as Element reads it from the
// invite (null for a room that is not a DM).
async function exchange(alice, bob, what, createRoom) {
    const invited = waitFor(bob, sdk.RoomMemberEvent.Membership,
        (_e, member) => member.userId === bobId && member.membership === "invite", `${what}: bob's invite`);
    const roomId = await createRoom();
    const [, invitee] = await invited;
    if (invitee.roomId !== roomId) fail(`${what}: invite to ${invitee.roomId}, expected ${roomId}`);
    const dmInviter = invitee.getDMInviter() ?? null;
    const joined = waitFor(alice, sdk.RoomMemberEvent.Membership,
        (_e, member) => member.roomId === roomId && member.userId === bobId && member.membership === "join",
        `${what}: bob's join at alice`);
    await bob.joinRoom(roomId);
    await joined;
    console.log(`ok: ${what}: bob invited over federation and joined ${roomId}`);
    await eventually(async () => await bob.getCrypto().isEncryptionEnabledInRoom(roomId), `${what}: encryption at bob`);

    const fromAlice = `${what}: hello from the appliance`;
    const atBob = decryptedBody(bob, roomId, aliceId, fromAlice, `${what}: alice's message at bob`);
    await alice.sendMessage(roomId, { msgtype: "m.text", body: fromAlice });
    await atBob;
    const fromBob = `${what}: hello from Synapse`;
    const atAlice = decryptedBody(alice, roomId, bobId, fromBob, `${what}: bob's message at alice`);
    await bob.sendMessage(roomId, { msgtype: "m.text", body: fromBob });
    await atAlice;
    return dmInviter;
}

const ENCRYPTION = { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } };

async function main() {
    const alice = await loggedIn(aliceUrl, aliceId);
    const bob = await loggedIn(bobUrl, bobId);

    // An encrypted private room, then an invite.
    const roomInviter = await exchange(alice, bob, "room", async () => {
        const { room_id: roomId } = await alice.createRoom({
            name: "js-sdk across servers",
            preset: "private_chat",
            initial_state: [ENCRYPTION],
        });
        await alice.invite(roomId, bobId);
        return roomId;
    });
    if (roomInviter !== null) fail(`a plain room's invite reads as a DM from ${roomInviter}`);

    // Each sees the other's device through their own server (keys queried across servers).
    for (const [client, other] of [[alice, bobId], [bob, aliceId]]) {
        const devices = await client.getCrypto().getUserDeviceInfo([other]);
        if ((devices.get(other)?.size ?? 0) < 1) fail(`${client.getUserId()} sees no device of ${other}`);
    }
    console.log("ok: each user's device list shows the other's device");

    // An encrypted DM, as Element creates it.
    const dmInviter = await exchange(alice, bob, "DM", async () => {
        const { room_id: roomId } = await alice.createRoom({
            is_direct: true,
            invite: [bobId],
            preset: "trusted_private_chat",
            initial_state: [ENCRYPTION],
        });
        return roomId;
    });
    // What Element reads to file an invite under People.
    if (dmInviter !== aliceId) fail(`the DM invite at bob is not a DM invite from alice: ${dmInviter}`);
    console.log("ok: the DM invite reached Synapse with is_direct");

    for (const client of [alice, bob]) client.stopClient();
    console.log("OK: Element's crypto decrypts both ways across servers");
    process.exit(0);
}

main().catch((error) => fail(error?.stack ?? String(error)));
