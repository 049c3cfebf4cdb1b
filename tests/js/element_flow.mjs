// What Element Web does through matrix-js-sdk, against the appliance: log in, start the sync
// loop with lazy-loaded members, create a room, invite, join, send, reply, react, edit, redact,
// type, read receipts, rename, change display name, tag, paginate back, ignore a user, leave;
// set and remove a pusher. Any failed request, sync error or missing event fails the run (exit
// code 1).
//
//   node element_flow.mjs <base_url> <alice> <bob> <password>
import * as sdk from "matrix-js-sdk";

import {
    fail, startedClient, timelineEvent as timelineEventOf, waitFor as waitForEvent,
} from "./support.mjs";

const [baseUrl, aliceName, bobName, password] = process.argv.slice(2);
const TIMEOUT_MS = 20000;

function waitFor(emitter, event, predicate, what) {
    return waitForEvent(emitter, event, predicate, what, TIMEOUT_MS);
}

async function loggedIn(user) {
    const versions = await sdk.createClient({ baseUrl }).getVersions();
    if (!versions.versions.includes("v1.11")) fail(`versions: ${JSON.stringify(versions)}`);
    return startedClient(baseUrl, user, password, "js-sdk test", TIMEOUT_MS);
}

function timelineEvent(client, roomId, predicate, what) {
    return timelineEventOf(client, roomId, predicate, what, TIMEOUT_MS);
}

async function main() {
    const alice = await loggedIn(aliceName);
    const bob = await loggedIn(bobName);
    const aliceId = alice.getUserId();
    const bobId = bob.getUserId();

    // What Element asks for at start-up.
    const capabilities = await alice.getCapabilities();
    if (!capabilities["m.room_versions"]?.default) fail(`capabilities: ${JSON.stringify(capabilities)}`);
    await alice.getPushRules();
    const whoami = await alice.whoami();
    if (whoami.user_id !== aliceId) fail(`whoami: ${JSON.stringify(whoami)}`);
    await alice.getDevices();

    // A pusher, as Element's mobile apps register one with their push gateway (sygnal).
    const pusher = {
        kind: "http", app_id: "im.vector.app.android", pushkey: "js-sdk-pushkey",
        app_display_name: "Element", device_display_name: "js-sdk test", lang: "en",
        data: { url: "https://push.example.org/_matrix/push/v1/notify", format: "event_id_only" },
        append: false,
    };
    await alice.setPusher(pusher);
    const { pushers } = await alice.getPushers();
    if (pushers.length !== 1 || pushers[0].pushkey !== "js-sdk-pushkey" || pushers[0].data.format !== "event_id_only") {
        fail(`pushers: ${JSON.stringify(pushers)}`);
    }
    await alice.removePusher("js-sdk-pushkey", "im.vector.app.android");
    if ((await alice.getPushers()).pushers.length !== 0) fail("pusher not removed");

    // Create and invite; bob sees the invite through sync and joins.
    const invited = waitFor(bob, sdk.RoomMemberEvent.Membership,
        (_event, member) => member.userId === bobId && member.membership === "invite", "bob's invite");
    const { room_id: roomId } = await alice.createRoom({ name: "js-sdk room", invite: [bobId], preset: "private_chat" });
    await invited;
    const bobJoinedSeenByAlice = waitFor(alice, sdk.RoomMemberEvent.Membership,
        (_event, member) => member.roomId === roomId && member.userId === bobId && member.membership === "join", "bob's join at alice");
    await bob.joinRoom(roomId);
    await bobJoinedSeenByAlice;

    // A message, a reply, a reaction, an edit, a redaction.
    const hello = timelineEvent(bob, roomId, (e) => e.getContent().body === "hello bob", "hello at bob");
    const { event_id: helloId } = await alice.sendMessage(roomId, { msgtype: "m.text", body: "hello bob" });
    const [helloEvent] = await hello;
    if (helloEvent.getSender() !== aliceId) fail("wrong sender");

    const reply = timelineEvent(alice, roomId, (e) => e.getContent().body === "hi alice", "reply at alice");
    await bob.sendMessage(roomId, {
        msgtype: "m.text",
        body: "hi alice",
        "m.relates_to": { "m.in_reply_to": { event_id: helloId } },
    });
    const [replyEvent] = await reply;
    if (replyEvent.replyEventId !== helloId) fail(`reply points at ${replyEvent.replyEventId}`);

    const reaction = timelineEvent(alice, roomId, (e) => e.getType() === "m.reaction", "reaction at alice");
    await bob.sendEvent(roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: helloId, key: "👍" } });
    const [reactionEvent] = await reaction;
    if (reactionEvent.getRelation()?.event_id !== helloId) fail("reaction relation lost");

    const edit = timelineEvent(bob, roomId, (e) => e.getContent()["m.new_content"]?.body === "hello, bob", "edit at bob");
    await alice.sendMessage(roomId, {
        msgtype: "m.text",
        body: "* hello, bob",
        "m.new_content": { msgtype: "m.text", body: "hello, bob" },
        "m.relates_to": { rel_type: "m.replace", event_id: helloId },
    });
    await edit;

    const oopsAtBob = timelineEvent(bob, roomId, (e) => e.getContent().body === "oops", "oops at bob");
    const { event_id: oopsId } = await alice.sendMessage(roomId, { msgtype: "m.text", body: "oops" });
    const [oopsEvent] = await oopsAtBob;
    const redaction = timelineEvent(bob, roomId,
        (e) => e.getType() === "m.room.redaction" && (e.event.redacts ?? e.getContent().redacts) === oopsId, "redaction at bob");
    await alice.redactEvent(roomId, oopsId);
    await redaction;
    if (!oopsEvent.isRedacted()) fail("bob's copy of the message is not redacted");

    // Typing and read receipts reach the other side.
    const typing = waitFor(bob, sdk.RoomMemberEvent.Typing,
        (_event, member) => member.userId === aliceId && member.typing, "alice typing at bob");
    await alice.sendTyping(roomId, true, 30000);
    await typing;
    const receipt = waitFor(alice, sdk.RoomEvent.Receipt,
        (event, room) => room.roomId === roomId && event.getContent()[helloId]?.["m.read"]?.[bobId] !== undefined,
        "bob's receipt at alice");
    await bob.sendReadReceipt(helloEvent);
    await receipt;

    // State changes: room name and display name.
    const renamed = waitFor(bob, sdk.RoomEvent.Name, (room) => room.roomId === roomId && room.name === "renamed", "rename at bob");
    await alice.setRoomName(roomId, "renamed");
    await renamed;
    const nameChange = waitFor(bob, sdk.RoomMemberEvent.Name,
        (_event, member) => member.userId === aliceId && member.name === "Alice A.", "display name at bob");
    await alice.setDisplayName("Alice A.");
    await nameChange;

    // Account data: a favourite tag, as Element sets it.
    await alice.setRoomTag(roomId, "m.favourite", { order: 0.5 });
    const tags = await alice.getRoomTags(roomId);
    if (!tags.tags["m.favourite"]) fail(`tags: ${JSON.stringify(tags)}`);

    // Back-pagination, as scrolling up does, reaches the room's creation.
    for (let i = 0; i < 30; i++) {
        await alice.sendMessage(roomId, { msgtype: "m.text", body: `filler ${i}` });
    }
    const fresh = await loggedIn(aliceName);
    let room = fresh.getRoom(roomId);
    if (!room) fail("room missing after a fresh initial sync");
    for (let i = 0; i < 10 && room.getLiveTimeline().getPaginationToken(sdk.EventTimeline.BACKWARDS); i++) {
        room = await fresh.scrollback(room, 20);
    }
    const types = room.getLiveTimeline().getEvents().map((e) => e.getType());
    if (!types.includes("m.room.create")) fail(`scrollback did not reach m.room.create: ${types.slice(0, 5)}`);
    const bodies = room.getLiveTimeline().getEvents().map((e) => e.getContent().body);
    if (!bodies.includes("hi alice") || !bodies.includes("filler 29")) fail("history incomplete after scrollback");

    // Ignoring (Element's "Ignore" on a user): while bob ignores alice, the server sends him
    // none of her messages (asked through the SDK's own /messages request); un-ignored, they
    // are back.
    const listSynced = waitFor(bob, sdk.ClientEvent.AccountData,
        (event) => event.getType() === "m.ignored_user_list", "the ignore list at bob");
    await bob.setIgnoredUsers([aliceId]);
    await listSynced;
    if (!bob.isUserIgnored(aliceId)) fail("bob's client does not know he ignores alice");
    await alice.sendMessage(roomId, { msgtype: "m.text", body: "while ignored" });
    await bob.sendMessage(roomId, { msgtype: "m.text", body: "after it" });
    const heard = async () => (await bob.createMessagesRequest(roomId, null, 30, "b")).chunk
        .map((e) => e.content?.body);
    const ignoring = await heard();
    if (ignoring.includes("while ignored") || ignoring.includes("filler 29")) {
        fail(`an ignored user's messages were delivered: ${ignoring}`);
    }
    if (!ignoring.includes("after it")) fail(`bob's own message missing: ${ignoring}`);
    await bob.setIgnoredUsers([]);
    if (!(await heard()).includes("while ignored")) fail("un-ignored messages still hidden");

    // Leave: bob's client moves the room to "left".
    const left = waitFor(bob, sdk.RoomMemberEvent.Membership,
        (_event, member) => member.roomId === roomId && member.userId === bobId && member.membership === "leave", "bob left");
    await bob.leave(roomId);
    await left;

    for (const client of [alice, bob, fresh]) client.stopClient();
    console.log("OK: the js-sdk flow passed");
    process.exit(0);
}

main().catch((error) => fail(error?.stack ?? String(error)));
