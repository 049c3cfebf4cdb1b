// What the client scripts share: failing loudly, waiting for an SDK event, and a logged-in
// client whose sync loop runs.
import * as sdk from "matrix-js-sdk";

export function fail(message) {
    console.error(`FAIL: ${message}`);
    process.exit(1);
}

// Resolves with the first emission of `event` whose arguments satisfy `predicate`.
export function waitFor(emitter, event, predicate, what, timeoutMs) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            emitter.off(event, listener);
            reject(new Error(`timed out waiting for ${what}`));
        }, timeoutMs);
        function listener(...args) {
            if (predicate(...args)) {
                clearTimeout(timer);
                emitter.off(event, listener);
                resolve(args);
            }
        }
        emitter.on(event, listener);
    });
}

// Resolves once `check()` resolves truthy, polling every 250 ms; fails the run after `timeoutMs`.
// `what` may be a function, for a message that describes the state at the time of failure.
export async function eventually(check, what, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
        if (await check()) return;
        await new Promise((r) => setTimeout(r, 250));
    }
    fail(`timed out waiting for ${typeof what === "function" ? what() : what}`);
}

// Logs `user` in with a password and starts the sync loop with Element's options (lazy-loaded
// members, a 20-event initial timeline); resolves once the first sync is PREPARED. A sync error
// fails the run, and so does a login as another user ID than the full `user` given. With
// `crypto: true`, the Rust crypto (in memory) starts first, with `cryptoCallbacks` if given.
export async function startedClient(
    baseUrl, user, password, deviceName, timeoutMs, { crypto = false, cryptoCallbacks } = {}) {
    const anonymous = sdk.createClient({ baseUrl });
    const login = await anonymous.login("m.login.password", {
        identifier: { type: "m.id.user", user },
        password,
        initial_device_display_name: deviceName,
    });
    if (user.startsWith("@") && login.user_id !== user) fail(`logged in as ${login.user_id}, not ${user}`);
    const client = sdk.createClient({
        baseUrl,
        accessToken: login.access_token,
        userId: login.user_id,
        deviceId: login.device_id,
        cryptoCallbacks,
    });
    if (crypto) await client.initRustCrypto({ useIndexedDB: false });
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "ERROR") fail(`${user}: sync error ${data?.error}`);
    });
    const prepared = waitFor(
        client, sdk.ClientEvent.Sync, (state) => state === "PREPARED", `${user} PREPARED`, timeoutMs);
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
    await prepared;
    return client;
}

// Resolves with the first event arriving in the timeline of `roomId` that satisfies `predicate`.
export function timelineEvent(client, roomId, predicate, what, timeoutMs) {
    return waitFor(
        client, sdk.RoomEvent.Timeline, (event, room) => room?.roomId === roomId && predicate(event),
        what, timeoutMs);
}
