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

// Logs `user` in with a password and starts the sync loop with Element's options (lazy-loaded
// members, a 20-event initial timeline); resolves once the first sync is PREPARED. A sync error
// fails the run.
export async function startedClient(baseUrl, user, password, deviceName, timeoutMs) {
    const anonymous = sdk.createClient({ baseUrl });
    const login = await anonymous.login("m.login.password", {
        identifier: { type: "m.id.user", user },
        password,
        initial_device_display_name: deviceName,
    });
    const client = sdk.createClient({
        baseUrl,
        accessToken: login.access_token,
        userId: login.user_id,
        deviceId: login.device_id,
    });
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
