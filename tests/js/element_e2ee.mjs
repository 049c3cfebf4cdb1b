// Element's encryption stack (matrix-js-sdk with its Rust crypto, matrix-sdk-crypto-wasm) against
// the appliance: a new login sets up cross-signing, secret storage and key backup the way Element's
// "set up secure backup" does; two users exchange messages in an encrypted DM and decrypt each
// other's; a second login of the first user restores the room keys from the server-side backup and
// reads the history. Any server error, sync error or undecryptable message fails the run.
//
//   node element_e2ee.mjs <base_url> <alice> <bob> <password>
import * as sdk from "matrix-js-sdk";

import { eventually as eventuallyWithin, fail, startedClient, waitFor as waitForEvent } from "./support.mjs";

const [baseUrl, aliceName, bobName, password] = process.argv.slice(2);
const TIMEOUT_MS = 30000;

function waitFor(emitter, event, predicate, what) {
    return waitForEvent(emitter, event, predicate, what, TIMEOUT_MS);
}

function eventually(check, what) {
    return eventuallyWithin(check, what, TIMEOUT_MS);
}

// Secret-storage keys this "user" knows, as Element keeps them while the user is in the dialog.
const secretStorageKeys = new Map();
const cryptoCallbacks = {
    getSecretStorageKey: async ({ keys }) => {
        for (const keyId of Object.keys(keys)) {
            if (secretStorageKeys.has(keyId)) return [keyId, secretStorageKeys.get(keyId)];
        }
        return null;
    },
    cacheSecretStorageKey: (keyId, _info, key) => secretStorageKeys.set(keyId, key),
};

function loggedIn(user) {
    return startedClient(baseUrl, user, password, "js-sdk e2ee test", TIMEOUT_MS,
        { crypto: true, cryptoCallbacks });
}

function passwordAuth(user) {
    return async (makeRequest) => {
        await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user }, password });
    };
}

// Waits for a message in `roomId` at `client` and returns its decrypted body.
async function decryptedBody(client, roomId, predicate, what) {
    const [event] = await waitFor(client, sdk.RoomEvent.Timeline,
        (e, room) => room?.roomId === roomId && e.getWireType() === "m.room.encrypted", what);
    await client.decryptEventIfNeeded(event);
    if (event.isDecryptionFailure()) fail(`${what}: decryption failed: ${event.decryptionFailureReason}`);
    const body = event.getContent().body;
    if (!predicate(body)) fail(`${what}: unexpected body ${body}`);
    return body;
}

async function main() {
    // Alice's first login: cross-signing, secret storage and key backup, as Element sets them up.
    const alice = await loggedIn(aliceName);
    const crypto = alice.getCrypto();
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth(aliceName) });
    const recoveryKey = await crypto.createRecoveryKeyFromPassphrase();
    await crypto.bootstrapSecretStorage({
        createSecretStorageKey: async () => recoveryKey,
        setupNewSecretStorage: true,
        setupNewKeyBackup: true,
    });
    const keyId = await alice.secretStorage.getDefaultKeyId();
    secretStorageKeys.set(keyId, recoveryKey.privateKey);
    if (!(await crypto.isCrossSigningReady())) fail("cross-signing not ready");
    if (!(await crypto.isSecretStorageReady())) fail("secret storage not ready");
    // Element checks the new backup and starts uploading to it.
    const check = await crypto.checkKeyBackupAndEnable();
    if (!check?.trustInfo?.trusted) fail(`the new key backup is not trusted: ${JSON.stringify(check?.trustInfo)}`);
    const backupVersion = await crypto.getActiveSessionBackupVersion();
    if (!backupVersion) fail("no active key backup");

    const bob = await loggedIn(bobName);
    await bob.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth(bobName) });

    // An encrypted DM, as Element creates it.
    const invited = waitFor(bob, sdk.RoomMemberEvent.Membership,
        (_e, member) => member.userId === bob.getUserId() && member.membership === "invite", "bob's invite");
    const { room_id: roomId } = await alice.createRoom({
        is_direct: true,
        invite: [bob.getUserId()],
        preset: "trusted_private_chat",
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await invited;
    const joined = waitFor(alice, sdk.RoomMemberEvent.Membership,
        (_e, member) => member.roomId === roomId && member.userId === bob.getUserId() && member.membership === "join", "bob joined");
    await bob.joinRoom(roomId);
    await joined;
    await eventually(async () => await bob.getCrypto().isEncryptionEnabledInRoom(roomId), "encryption at bob");

    const atBob = decryptedBody(bob, roomId, (b) => b === "secret hello", "alice's message at bob");
    await alice.sendMessage(roomId, { msgtype: "m.text", body: "secret hello" });
    await atBob;
    const atAlice = decryptedBody(alice, roomId, (b) => b === "secret reply", "bob's reply at alice");
    await bob.sendMessage(roomId, { msgtype: "m.text", body: "secret reply" });
    await atAlice;

    // Alice's room keys reach the server-side backup.
    await eventually(async () => {
        const keys = await alice.http.authedRequest(sdk.Method.Get, "/room_keys/keys", { version: backupVersion });
        return Object.keys(keys.rooms?.[roomId]?.sessions ?? {}).length > 0;
    }, "room keys in the backup");

    // A new login of alice's restores them from the backup and reads the history.
    const second = await loggedIn(aliceName);
    const secondCrypto = second.getCrypto();
    await secondCrypto.loadSessionBackupPrivateKeyFromSecretStorage();
    const restored = await secondCrypto.restoreKeyBackup();
    if (restored.imported < 1) fail(`restored ${JSON.stringify(restored)}`);
    let room = second.getRoom(roomId);
    for (let i = 0; i < 5 && room.getLiveTimeline().getPaginationToken(sdk.EventTimeline.BACKWARDS); i++) {
        room = await second.scrollback(room, 20);
    }
    const bodies = [];
    for (const event of room.getLiveTimeline().getEvents()) {
        if (event.getWireType() !== "m.room.encrypted") continue;
        await second.decryptEventIfNeeded(event);
        if (!event.isDecryptionFailure()) bodies.push(event.getContent().body);
    }
    if (!bodies.includes("secret hello")) fail(`history after restore: ${JSON.stringify(bodies)}`);

    for (const client of [alice, bob, second]) client.stopClient();
    console.log("OK: Element's crypto stack works against the server");
    process.exit(0);
}

main().catch((error) => fail(error?.stack ?? String(error)));
