// Delayed events (MSC4140) through matrix-js-sdk's own calls, as Element Call uses them: check
// the server advertises them, schedule a "left the call" member state, restart it (the
// heartbeat), find it listed, join the call, then have the leave sent; a delayed message arrives
// in the other user's timeline and a cancelled one is gone from the list. Any failed request,
// sync error or missing event fails the run (exit code 1).
//
//   node delayed_events.mjs <base_url> <alice> <bob> <password>
import * as sdk from "matrix-js-sdk";

import {
    fail, startedClient, timelineEvent as timelineEventOf, waitFor as waitForEvent,
} from "./support.mjs";

const [baseUrl, aliceName, bobName, password] = process.argv.slice(2);
const TIMEOUT_MS = 20000;
const CALL_MEMBER = "org.matrix.msc3401.call.member";

function waitFor(emitter, event, predicate, what) {
    return waitForEvent(emitter, event, predicate, what, TIMEOUT_MS);
}

async function loggedIn(user) {
    return startedClient(baseUrl, user, password, "js-sdk delayed events", TIMEOUT_MS);
}

function timelineEvent(client, roomId, predicate, what) {
    return timelineEventOf(client, roomId, predicate, what, TIMEOUT_MS);
}

async function listed(client) {
    const { delayed_events: events } = await client._unstable_getDelayedEvents();
    return events;
}

async function main() {
    const alice = await loggedIn(aliceName);
    const bob = await loggedIn(bobName);
    if (!(await alice.doesServerSupportUnstableFeature("org.matrix.msc4140"))) {
        fail("org.matrix.msc4140 is not advertised");
    }

    const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "Call" });
    const bobJoined = waitFor(bob, sdk.RoomEvent.MyMembership, (room, membership) => room.roomId === roomId && membership === "join", "bob joined");
    await bob.joinRoom(roomId);
    await bobJoined;

    // Element Call: the leave is scheduled before the join, then restarted while in the call.
    const stateKey = `_${alice.getUserId()}_${alice.getDeviceId()}_m.call`;
    const { delay_id: leaveId } = await alice._unstable_sendDelayedStateEvent(roomId, { delay: 60000 }, CALL_MEMBER, {}, stateKey);
    if (!leaveId) fail("no delay_id for the delayed state event");
    await alice._unstable_updateDelayedEvent(leaveId, "restart");
    const entry = (await listed(alice)).find((e) => e.delay_id === leaveId);
    if (!entry || entry.type !== CALL_MEMBER || entry.state_key !== stateKey || entry.delay_ms !== 60000) {
        fail(`listed: ${JSON.stringify(await listed(alice))}`);
    }
    const joinContent = { application: "m.call", call_id: "", device_id: alice.getDeviceId(), scope: "m.room" };
    const bobSawJoin = timelineEvent(bob, roomId, (e) => e.getType() === CALL_MEMBER && e.getContent().application === "m.call", "the call join");
    await alice.sendStateEvent(roomId, CALL_MEMBER, joinContent, stateKey);
    await bobSawJoin;

    // Hanging up: the scheduled leave is sent now.
    const bobSawLeave = timelineEvent(bob, roomId, (e) => e.getType() === CALL_MEMBER && e.getStateKey() === stateKey && Object.keys(e.getContent()).length === 0, "the call leave");
    await alice._unstable_updateDelayedEvent(leaveId, "send");
    await bobSawLeave;

    // A delayed message arrives by itself; a cancelled one is gone.
    const bobSawLater = timelineEvent(bob, roomId, (e) => e.getContent().body === "later", "the delayed message");
    const { delay_id: laterId } = await alice._unstable_sendDelayedEvent(roomId, { delay: 1000 }, null, "m.room.message", { msgtype: "m.text", body: "later" });
    const { delay_id: cancelledId } = await alice._unstable_sendDelayedEvent(roomId, { delay: 60000 }, null, "m.room.message", { msgtype: "m.text", body: "never" });
    await alice._unstable_updateDelayedEvent(cancelledId, "cancel");
    const [later] = await bobSawLater;
    if (later.getSender() !== alice.getUserId()) fail(`sender: ${later.getSender()}`);
    const left = await listed(alice);
    if (left.some((e) => e.delay_id === cancelledId || e.delay_id === laterId || e.delay_id === leaveId)) {
        fail(`still listed: ${JSON.stringify(left)}`);
    }

    alice.stopClient();
    bob.stopClient();
    console.log("OK: delayed events through matrix-js-sdk");
    process.exit(0);
}

main().catch((e) => fail(e?.stack ?? String(e)));
