//! Looks at every client message before the `turn` crate does, for what the crate has no hook
//! for: credentials refused with 401 Unauthorized as RFC 8489 §9.2 asks (the crate answers 400
//! Bad Request to a wrong password or an unknown user name, which clients do not take for a
//! credentials problem), the peer filter on CreatePermission, ChannelBind and Send, the per-user
//! allocation quota, and telling our relay address generator whose allocation it is making.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use stun::{
    attributes::{
        ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
    },
    error_code::{
        CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
    },
    integrity::MessageIntegrity,
    message::{
        CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, MAGIC_COOKIE, METHOD_ALLOCATE,
        METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_SEND, Message, MessageType, Method,
        Setter,
    },
    textattrs::TextAttribute,
};
use turn::auth::AuthHandler;

use super::{allocations::Registry, peer_filter::PeerFilter};

/// What to do with a client message.
pub enum Verdict {
    /// Hand it to the crate.
    Pass,
    /// Answer with these bytes instead.
    Answer(Vec<u8>),
    /// Ignore it.
    Drop,
}

/// The allocation about to be made: the crate handles one message of a listener at a time, so
/// the Allocate request the gate just passed is the one the address generator is called for
/// (once, or twice with EVEN-PORT, whose port the crate probes with a throw-away socket).
#[derive(Clone)]
pub struct Pending {
    pub username: String,
    pub client: SocketAddr,
}

/// One per listener.
pub struct Gate {
    filter: Arc<PeerFilter>,
    registry: Arc<Registry>,
    per_user: u32,
    auth: Arc<dyn AuthHandler + Send + Sync>,
    realm: String,
    pending: Mutex<Option<Pending>>,
}

impl Gate {
    pub fn new(
        filter: Arc<PeerFilter>,
        registry: Arc<Registry>,
        per_user: u32,
        auth: Arc<dyn AuthHandler + Send + Sync>,
        realm: String,
    ) -> Self {
        Self {
            filter,
            registry,
            per_user,
            auth,
            realm,
            pending: Mutex::new(None),
        }
    }

    /// Do the user name and MESSAGE-INTEGRITY of a request hold? The same key the crate then
    /// checks with: our `AuthHandler`'s, for the realm the request names.
    fn credentials_hold(&self, message: &Message, from: SocketAddr) -> bool {
        let text = |attr| {
            message
                .get(attr)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
        };
        let (Some(username), Some(realm)) = (text(ATTR_USERNAME), text(ATTR_REALM)) else {
            return false;
        };
        match self.auth.auth_handle(&username, &realm, from) {
            Ok(key) => MessageIntegrity(key).check(&mut message.clone()).is_ok(),
            Err(_) => false,
        }
    }

    pub fn pending(&self) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn inspect(&self, packet: &[u8], from: SocketAddr) -> Verdict {
        let Some(&first) = packet.first() else {
            return Verdict::Drop;
        };
        if first & 0xc0 != 0 {
            // ChannelData: its channel was bound through the filter already.
            return Verdict::Pass;
        }
        let mut message = Message {
            raw: packet.to_vec(),
            ..Default::default()
        };
        if message.decode().is_err() {
            tracing::debug!(%from, "malformed TURN message dropped");
            return Verdict::Drop;
        }
        let (method, class) = (message.typ.method, message.typ.class);
        if class == CLASS_REQUEST
            && message.contains(ATTR_MESSAGE_INTEGRITY)
            && !self.credentials_hold(&message, from)
        {
            tracing::info!(%from, "TURN request refused: wrong, expired or malformed credentials");
            return unauthorized(&message, method, &self.realm);
        }
        if class == CLASS_REQUEST && method == METHOD_ALLOCATE {
            if message.contains(ATTR_MESSAGE_INTEGRITY) {
                let username = message
                    .get(ATTR_USERNAME)
                    .map(|raw| String::from_utf8_lossy(&raw).into_owned())
                    .unwrap_or_default();
                if self.registry.count_for(&username) >= self.per_user as usize {
                    tracing::info!(%from, "TURN allocation refused: `turn_max_allocations_per_user` reached");
                    return error_answer(
                        &message,
                        method,
                        CODE_ALLOC_QUOTA_REACHED,
                        "Allocation Quota Reached",
                    );
                }
                *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pending {
                    username,
                    client: from,
                });
            }
            return Verdict::Pass;
        }
        let checks_peers = (class == CLASS_REQUEST
            && (method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND))
            || (class == CLASS_INDICATION && method == METHOD_SEND);
        if !checks_peers {
            return Verdict::Pass;
        }
        let denied = peer_addresses(&message).find(|peer| !self.filter.allows(*peer));
        match denied {
            None => Verdict::Pass,
            Some(_) if class == CLASS_INDICATION => Verdict::Drop,
            Some(peer) => {
                tracing::info!(%from, %peer, "TURN peer refused by the peer filter");
                error_answer(&message, method, CODE_FORBIDDEN, "Forbidden")
            }
        }
    }
}

/// Every XOR-PEER-ADDRESS of a message (CreatePermission may carry several; the crate's getter
/// reads only the first). Undecodable ones read as unspecified, which the filter refuses.
fn peer_addresses(message: &Message) -> impl Iterator<Item = IpAddr> + '_ {
    message
        .attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|a| {
            decode_xor_ip(&a.value, &message.transaction_id.0)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        })
}

fn decode_xor_ip(value: &[u8], transaction_id: &[u8; 12]) -> Option<IpAddr> {
    let family = value.get(1)?;
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(transaction_id);
    match family {
        1 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let ip: Vec<u8> = raw.iter().zip(key).map(|(b, k)| b ^ k).collect();
            Some(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])))
        }
        2 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut ip = [0u8; 16];
            for (i, byte) in ip.iter_mut().enumerate() {
                *byte = raw[i] ^ key[i];
            }
            Some(IpAddr::V6(Ipv6Addr::from(ip)))
        }
        _ => None,
    }
}

/// 401 with the realm and a fresh nonce, so that the client may try other credentials.
fn unauthorized(request: &Message, method: Method, realm: &str) -> Verdict {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    answer(
        request,
        method,
        CODE_UNAUTHORIZED,
        "Unauthorized",
        vec![
            Box::new(TextAttribute::new(ATTR_REALM, realm.to_owned())),
            Box::new(TextAttribute::new(ATTR_NONCE, nonce)),
        ],
    )
}

fn error_answer(request: &Message, method: Method, code: ErrorCode, reason: &str) -> Verdict {
    answer(request, method, code, reason, Vec::new())
}

fn answer(
    request: &Message,
    method: Method,
    code: ErrorCode,
    reason: &str,
    extra: Vec<Box<dyn Setter>>,
) -> Verdict {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(Message {
            transaction_id: request.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
    ];
    setters.extend(extra);
    let mut response = Message::new();
    match response.build(&setters) {
        Ok(()) => Verdict::Answer(response.raw),
        Err(_) => Verdict::Drop,
    }
}

#[cfg(test)]
mod tests {
    use stun::{agent::TransactionId, message::Getter, xoraddr::XorMappedAddress};

    use super::*;

    #[test]
    fn every_peer_address_of_a_create_permission_is_read() {
        let mut message = Message::new();
        let tid = TransactionId::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(Message {
                transaction_id: tid,
                ..Default::default()
            }),
            Box::new(MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)),
        ];
        message.build(&setters).unwrap();
        for ip in ["8.8.8.8", "127.0.0.1", "2001:4860::8888"] {
            let address = XorMappedAddress {
                ip: ip.parse().unwrap(),
                port: 9,
            };
            address
                .add_to_as(&mut message, ATTR_XOR_PEER_ADDRESS)
                .unwrap();
        }
        message.encode();
        let mut decoded = Message {
            raw: message.raw.clone(),
            ..Default::default()
        };
        decoded.decode().unwrap();
        let peers: Vec<String> = peer_addresses(&decoded).map(|p| p.to_string()).collect();
        assert_eq!(peers, ["8.8.8.8", "127.0.0.1", "2001:4860::8888"]);

        let gate = test_gate();
        let from = "198.51.100.1:5000".parse().unwrap();
        assert!(matches!(
            gate.inspect(&message.raw, from),
            Verdict::Answer(_)
        ));
        assert!(matches!(
            gate.inspect(b"\x01\x01garbage", from),
            Verdict::Drop
        ));
    }

    fn test_gate() -> Gate {
        Gate::new(
            Arc::new(PeerFilter::new(false, &[])),
            Arc::new(Registry::default()),
            1,
            Arc::new(super::super::auth::RestAuth::new("gate-secret".to_owned())),
            "test.local".to_owned(),
        )
    }

    fn signed_allocate(username: &str, password: &str) -> Message {
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(Message {
                transaction_id: TransactionId::new(),
                ..Default::default()
            }),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
            Box::new(TextAttribute::new(ATTR_REALM, "test.local".to_owned())),
            Box::new(TextAttribute::new(ATTR_NONCE, "nonce".to_owned())),
            Box::new(MessageIntegrity::new_long_term_integrity(
                username.to_owned(),
                "test.local".to_owned(),
                password.to_owned(),
            )),
        ];
        message.build(&setters).unwrap();
        message
    }

    fn error_code_of(verdict: Verdict) -> Option<u16> {
        let Verdict::Answer(raw) = verdict else {
            return None;
        };
        let mut answer = Message {
            raw,
            ..Default::default()
        };
        answer.decode().ok()?;
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&answer).ok()?;
        answer.get(ATTR_NONCE).ok()?;
        answer.get(ATTR_REALM).ok()?;
        Some(code.code.0)
    }

    #[test]
    fn bad_credentials_get_401_with_a_nonce_and_good_ones_pass() {
        let gate = test_gate();
        let from = "198.51.100.1:5000".parse().unwrap();
        let future = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let username = format!("{future}:@caller:test.local");
        let password = crate::services::voip::password_for("gate-secret", &username);

        let good = signed_allocate(&username, &password);
        assert!(matches!(gate.inspect(&good.raw, from), Verdict::Pass));

        let wrong_password = signed_allocate(&username, "not-the-password");
        assert_eq!(
            error_code_of(gate.inspect(&wrong_password.raw, from)),
            Some(401)
        );

        let expired = "1000000000:@caller:test.local";
        let expired_message = signed_allocate(
            expired,
            &crate::services::voip::password_for("gate-secret", expired),
        );
        assert_eq!(
            error_code_of(gate.inspect(&expired_message.raw, from)),
            Some(401)
        );

        let malformed = signed_allocate(
            "@caller:test.local",
            &crate::services::voip::password_for("gate-secret", "@caller:test.local"),
        );
        assert_eq!(error_code_of(gate.inspect(&malformed.raw, from)), Some(401));
    }
}
