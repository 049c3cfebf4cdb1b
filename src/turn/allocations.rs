//! Every live allocation's relayed socket, wrapped so that the relay can count, cap, filter and
//! end it from outside the `turn` crate: the crate hands each allocation the [`RelayConn`] our
//! address generator made, and drops the allocation when that socket's reads fail.
//!
//! Each relayed socket has bandwidth and packet-rate caps (token buckets), counters, a lifetime
//! cap, and a `CancellationToken` that ends it: its reads then fail, so the crate drops the
//! allocation.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;

use super::peer_filter::PeerFilter;

/// Limits that apply to each allocation.
#[derive(Clone, Copy)]
pub struct Caps {
    pub max_lifetime: Duration,
    /// Bytes per second, both directions together; 0 = none.
    pub bandwidth: u64,
    /// Packets per second, both directions together; 0 = none.
    pub packet_rate: u32,
}

/// One allocation as the status shows it.
pub struct Entry {
    pub username: String,
    /// The listener the client came through.
    pub listener: SocketAddr,
    pub client: SocketAddr,
    pub relay: SocketAddr,
    pub started: Instant,
    end: CancellationToken,
}

/// The live allocations of every listener.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    pub bytes_relayed: AtomicU64,
    pub packets_relayed: AtomicU64,
    pub packets_dropped: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn count_for(&self, username: &str) -> usize {
        self.lock()
            .values()
            .filter(|e| e.username == username)
            .count()
    }

    /// Ends the allocations matching `which`; returns how many.
    pub fn end_where(&self, which: impl Fn(&Entry) -> bool) -> usize {
        let entries = self.lock();
        let mut ended = 0;
        for entry in entries.values().filter(|e| which(e)) {
            entry.end.cancel();
            ended += 1;
        }
        ended
    }

    /// (user, client, relay address, age) of every allocation.
    pub fn snapshot(&self) -> Vec<(String, SocketAddr, SocketAddr, Duration)> {
        self.lock()
            .values()
            .map(|e| (e.username.clone(), e.client, e.relay, e.started.elapsed()))
            .collect()
    }

    fn add(&self, entry: Entry) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, entry);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Whose allocation a relayed socket serves.
pub struct Owner {
    pub username: String,
    /// The listener the client came through.
    pub listener: SocketAddr,
    pub client: SocketAddr,
}

/// Token buckets for an allocation's bandwidth and packet-rate caps.
struct Bucket {
    bytes: f64,
    packets: f64,
    last: Instant,
}

/// The relayed socket of one allocation.
pub struct RelayConn {
    id: u64,
    socket: UdpSocket,
    advertised: SocketAddr,
    registry: Arc<Registry>,
    filter: Arc<PeerFilter>,
    caps: Caps,
    bucket: Mutex<Bucket>,
    end: CancellationToken,
}

impl RelayConn {
    pub fn new(
        socket: UdpSocket,
        advertised: SocketAddr,
        owner: Owner,
        registry: Arc<Registry>,
        filter: Arc<PeerFilter>,
        caps: Caps,
    ) -> Arc<Self> {
        let end = CancellationToken::new();
        let Owner {
            username,
            listener,
            client,
        } = owner;
        let id = registry.add(Entry {
            username,
            listener,
            client,
            relay: advertised,
            started: Instant::now(),
            end: end.clone(),
        });
        // The lifetime cap: however often the client refreshes, the allocation ends then.
        let timer = end.clone();
        let max_lifetime = caps.max_lifetime;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(max_lifetime) => {
                    tracing::info!("TURN allocation reached `turn_max_allocation_lifetime`; ending it");
                    timer.cancel();
                }
                _ = timer.cancelled() => {}
            }
        });
        Arc::new(Self {
            id,
            socket,
            advertised,
            registry,
            filter,
            caps,
            bucket: Mutex::new(Bucket {
                bytes: caps.bandwidth as f64,
                packets: f64::from(caps.packet_rate),
                last: Instant::now(),
            }),
            end,
        })
    }

    /// Takes one packet of `len` bytes from the buckets; `false` means over a cap: drop it.
    fn admit(&self, len: usize) -> bool {
        if self.caps.bandwidth == 0 && self.caps.packet_rate == 0 {
            return true;
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        // A burst of one second's worth is allowed, as media comes in bursts (key frames).
        let byte_cap = self.caps.bandwidth as f64;
        let packet_cap = f64::from(self.caps.packet_rate);
        bucket.bytes = (bucket.bytes + elapsed * byte_cap).min(byte_cap);
        bucket.packets = (bucket.packets + elapsed * packet_cap).min(packet_cap);
        let fits_bytes = self.caps.bandwidth == 0 || bucket.bytes >= len as f64;
        let fits_packets = self.caps.packet_rate == 0 || bucket.packets >= 1.0;
        if fits_bytes && fits_packets {
            bucket.bytes -= len as f64;
            bucket.packets -= 1.0;
            true
        } else {
            false
        }
    }

    fn counted(&self, len: usize) {
        self.registry
            .bytes_relayed
            .fetch_add(len as u64, Ordering::Relaxed);
        self.registry
            .packets_relayed
            .fetch_add(1, Ordering::Relaxed);
    }

    fn dropped(&self) {
        self.registry
            .packets_dropped
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for RelayConn {
    fn drop(&mut self) {
        self.end.cancel();
        self.registry.remove(self.id);
    }
}

fn ended() -> webrtc_util::Error {
    webrtc_util::Error::Other("allocation ended".to_owned())
}

#[async_trait]
impl Conn for RelayConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("not supported".to_owned()))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = tokio::select! {
                received = self.socket.recv_from(buf) => received?,
                // The crate drops an allocation whose relayed socket fails: that is how the relay
                // ends allocations (old public IP, lifetime cap, closed TCP connection).
                _ = self.end.cancelled() => {
                    self.registry.remove(self.id);
                    return Err(ended());
                }
            };
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            if !self.filter.allows(from.ip()) || !self.admit(n) {
                self.dropped();
                continue;
            }
            self.counted(n);
            return Ok((n, from));
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("not supported".to_owned()))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if self.end.is_cancelled() {
            return Err(ended());
        }
        // The gate refuses permissions for denied peers already; this is the last line.
        if !self.filter.allows(target.ip()) || !self.admit(buf.len()) {
            self.dropped();
            // Report the packet as sent: a dropped datagram is what UDP promises anyway, and an
            // error here would only fill the log.
            return Ok(buf.len());
        }
        let target = match (target.ip(), self.socket.local_addr()?.ip()) {
            (IpAddr::V4(v4), IpAddr::V6(_)) => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), target.port())
            }
            _ => target,
        };
        let sent = self.socket.send_to(buf, target).await?;
        self.counted(sent);
        Ok(sent)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.advertised)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.end.cancel();
        self.registry.remove(self.id);
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn relay(registry: &Arc<Registry>, caps: Caps) -> Arc<RelayConn> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let advertised = socket.local_addr().unwrap();
        RelayConn::new(
            socket,
            advertised,
            Owner {
                username: "1:@caller:test.local".to_owned(),
                listener: "127.0.0.1:3478".parse().unwrap(),
                client: "127.0.0.1:50000".parse().unwrap(),
            },
            registry.clone(),
            Arc::new(PeerFilter::new(true, &[])),
            caps,
        )
    }

    #[tokio::test]
    async fn an_allocation_ends_at_its_lifetime_cap() {
        let registry = Arc::new(Registry::default());
        let caps = Caps {
            max_lifetime: Duration::from_millis(300),
            bandwidth: 0,
            packet_rate: 0,
        };
        let conn = relay(&registry, caps).await;
        assert_eq!(registry.count_for("1:@caller:test.local"), 1);
        assert!(!conn.end.is_cancelled(), "ended at once");
        tokio::time::timeout(Duration::from_secs(10), conn.end.cancelled())
            .await
            .expect("still alive long after its cap");
    }

    #[tokio::test]
    async fn the_buckets_admit_a_seconds_worth_then_drop() {
        let registry = Arc::new(Registry::default());
        let caps = Caps {
            max_lifetime: Duration::from_secs(600),
            bandwidth: 10_000,
            packet_rate: 1_000,
        };
        let conn = relay(&registry, caps).await;
        // Ten 1000-byte packets fill the byte bucket; the eleventh is over the cap.
        assert!((0..10).all(|_| conn.admit(1000)));
        assert!(!conn.admit(1000));
        let packets = relay(
            &registry,
            Caps {
                bandwidth: 0,
                packet_rate: 5,
                ..caps
            },
        )
        .await;
        assert!((0..5).all(|_| packets.admit(10)));
        assert!(!packets.admit(10));
    }
}
