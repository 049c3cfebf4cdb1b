-- The public room lists of application services (`PUT /directory/list/appservice/{networkId}/
-- {roomId}`): a bridge lists its portal rooms per network (one instance of a third-party
-- network it bridges), and `/publicRooms` with `third_party_instance_id` `{appservice id}|
-- {network id}` shows that list (`include_all_networks`: these and the main list). Synapse's
-- table of the same name; the room need not be known yet (Synapse does not check either).
CREATE TABLE appservice_room_list (
    appservice_id  TEXT NOT NULL,
    network_id     TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
) STRICT;
