//! Abuse reports: users report an event, a whole room or a user to the server's admins, who read
//! and resolve them with `appliance admin reports`. Nothing is sent anywhere else.

use ruma::{EventId, RoomId, UserId, events::room::member::MembershipState};

use super::rooms::Rooms;
use crate::{
    error::{Error, Result},
    storage::{
        Database, now_ms,
        reports::{self as store, NewReport, ReportRow},
    },
};

pub struct Reports {
    db: Database,
}

impl Reports {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a report about an event of a room the reporter is joined to (the spec's rule since
    /// 1.8) and may see; `404` otherwise, whether or not the event exists (the same answer, so
    /// that reports do not reveal which events exist).
    pub async fn report_event(
        &self,
        rooms: &Rooms,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<String>,
    ) -> Result<i64> {
        let not_found =
            || Error::not_found("The event was not found or you are not joined to the room");
        if rooms.membership(room_id, reporter).await? != Some(MembershipState::Join) {
            return Err(not_found());
        }
        let sender = rooms
            .visible_event_sender(room_id, reporter, event_id.as_str())
            .await?;
        self.insert(reporter, room_id, Some((event_id, sender)), reason)
            .await
    }

    /// Stores a report about a room this server knows (`404` otherwise, as the spec asks);
    /// the reporter need not be in it (rooms are reported from the directory, or invites).
    pub async fn report_room(
        &self,
        rooms: &Rooms,
        reporter: &UserId,
        room_id: &RoomId,
        reason: String,
    ) -> Result<i64> {
        rooms
            .room_version(room_id)
            .await
            .map_err(|_| Error::not_found("Room not found"))?;
        self.insert(reporter, room_id, None, Some(reason)).await
    }

    /// Stores a report about a user of this server (`POST /users/{userId}/report`). Reports about
    /// unknown or remote users are dropped with the same success (`None`): the spec lets a server
    /// hide whether a user exists, and Synapse does so; the admins could not act on a remote user's
    /// account anyway. The reporter need not share a room with the user.
    pub async fn report_user(
        &self,
        reporter: &UserId,
        user: &UserId,
        reason: String,
    ) -> Result<Option<i64>> {
        let (reporter, user) = (reporter.to_string(), user.to_string());
        let reason = Some(reason).filter(|r| !r.trim().is_empty());
        let id = self
            .db
            .write(move |tx| {
                // Only this server's users are in `users`.
                if !crate::storage::users::user_exists(tx, &user)? {
                    return Ok(None);
                }
                let report = NewReport {
                    reporter: &reporter,
                    room_id: None,
                    event_id: None,
                    event_sender: None,
                    reported_user: Some(&user),
                    reason: reason.as_deref(),
                };
                store::insert(tx, &report, now_ms())
                    .map(Some)
                    .map_err(Error::from)
            })
            .await?;
        if let Some(id) = id {
            tracing::info!(report = id, "abuse report about a user received");
        }
        Ok(id)
    }

    async fn insert(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event: Option<(&EventId, String)>,
        reason: Option<String>,
    ) -> Result<i64> {
        let (reporter, room_id) = (reporter.to_string(), room_id.to_string());
        let (event_id, sender) = event.map(|(id, sender)| (id.to_string(), sender)).unzip();
        // An empty reason says no more than none.
        let reason = reason.filter(|r| !r.trim().is_empty());
        let id = self
            .db
            .write(move |tx| {
                let report = NewReport {
                    reporter: &reporter,
                    room_id: Some(&room_id),
                    event_id: event_id.as_deref(),
                    event_sender: sender.as_deref(),
                    reported_user: None,
                    reason: reason.as_deref(),
                };
                store::insert(tx, &report, now_ms()).map_err(Error::from)
            })
            .await?;
        tracing::info!(report = id, "abuse report received");
        Ok(id)
    }

    /// Reports oldest first: the unresolved ones, or all.
    pub async fn list(&self, all: bool) -> Result<Vec<ReportRow>> {
        self.db
            .read(move |c| store::list(c, all).map_err(Error::from))
            .await
    }

    pub async fn get(&self, id: i64) -> Result<ReportRow> {
        self.db
            .read(move |c| store::get(c, id).map_err(Error::from))
            .await?
            .ok_or_else(|| Error::not_found(format!("No report {id}")))
    }

    /// Marks a report handled, by whom (an admin's name, free text from the CLI).
    pub async fn resolve(&self, id: i64, resolved_by: String) -> Result<()> {
        let found = self
            .db
            .write(move |tx| store::resolve(tx, id, &resolved_by, now_ms()).map_err(Error::from))
            .await?;
        if found {
            Ok(())
        } else {
            Err(Error::not_found(format!("No report {id}")))
        }
    }
}
