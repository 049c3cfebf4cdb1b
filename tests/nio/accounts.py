#!/usr/bin/env python3
"""matrix-nio against the appliance: accounts.

Registers a user (m.login.dummy), logs in with the password on a second client, sets and reads
back the display name, asks whoami on both devices, and logs out; a logged-out token must stop
working while the other device keeps its session.

Usage: accounts.py HOMESERVER_URL   (exit status 0 when every check held)
"""

from __future__ import annotations

import nio

from niocheck import Checks, ensure, expect, expect_equal, expect_error, main

DISPLAY_NAME = "Nio Tester \N{CRAB}"


async def scenario(t: Checks) -> None:
    # Registration through nio's UIA helper.
    alice = await t.register("nio-alice")
    t.ok(f"register {alice.user_id} (device {alice.device_id})")

    whoami = expect(await alice.client.whoami(), nio.WhoamiResponse, "whoami after register")
    expect_equal(whoami.user_id, alice.user_id, "whoami after register: user_id")
    expect_equal(whoami.device_id, alice.device_id, "whoami after register: device_id")
    t.ok("whoami on the registered device")

    # Password login on a second client: a second device of the same user.
    laptop = await t.login(alice, device_name="nio laptop")
    ensure(
        laptop.device_id != alice.device_id,
        f"login: expected a new device, got the registered one ({laptop.device_id})",
    )
    t.ok(f"log in with the password (new device {laptop.device_id})")

    stranger = t.client(user=alice.user_id)
    expect_error(
        await stranger.login("not the password"), "M_FORBIDDEN", 403, "login with a wrong password"
    )
    t.ok("a wrong password is refused with M_FORBIDDEN")

    # Profile: set on one device, read back on both.
    expect(
        await laptop.set_displayname(DISPLAY_NAME),
        nio.ProfileSetDisplayNameResponse,
        "set_displayname",
    )
    for client, where in ((laptop, "the same device"), (alice.client, "the other device")):
        name = expect(
            await client.get_displayname(),
            nio.ProfileGetDisplayNameResponse,
            f"get_displayname on {where}",
        )
        expect_equal(name.displayname, DISPLAY_NAME, f"get_displayname on {where}")
    t.ok(f"set the display name and read it back on both devices: {DISPLAY_NAME!r}")

    whoami = expect(await laptop.whoami(), nio.WhoamiResponse, "whoami on the second device")
    expect_equal(whoami.user_id, alice.user_id, "whoami on the second device: user_id")
    expect_equal(whoami.device_id, laptop.device_id, "whoami on the second device: device_id")
    t.ok("whoami on the second device")

    # Logout ends that device's session only.
    old_token = laptop.access_token
    expect(await laptop.logout(), nio.LogoutResponse, "logout of the second device")
    laptop.access_token = old_token  # nio forgets the token on logout; try it anyway
    expect_error(
        await laptop.whoami(), "M_UNKNOWN_TOKEN", 401, "whoami with a logged-out token"
    )
    expect(await alice.client.whoami(), nio.WhoamiResponse, "whoami on the device still in")
    t.ok("logout: the token stops working, the other device stays logged in")

    expect(await alice.client.logout(), nio.LogoutResponse, "logout of the first device")
    t.ok("log out the first device")


if __name__ == "__main__":
    main(scenario, __doc__.splitlines()[0])
