//! The relay's client-facing sockets as the `turn` crate's `Conn`: UDP, and TCP or TLS streams
//! (RFC 5766 §2.1) multiplexed into one `Conn` per listener, so that the crate, which only reads
//! datagrams, serves stream clients too. Every message passes the [`Gate`] first.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    sync::{Mutex, mpsc},
};
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;

use super::{
    allocations::Registry,
    gate::{Gate, Verdict},
};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames from stream clients waiting for the crate.
const STREAM_QUEUE: usize = 1024;

fn unsupported() -> webrtc_util::Error {
    webrtc_util::Error::Other("not supported".to_owned())
}

/// An IPv4 target on a dual-stack IPv6 socket is written as `::ffff:a.b.c.d`.
fn to_socket_family(target: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (target, local) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => target,
    }
}

fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// TURN over UDP.
pub struct GatedUdp {
    socket: UdpSocket,
    local: SocketAddr,
    gate: Arc<Gate>,
}

impl GatedUdp {
    pub fn new(socket: UdpSocket, gate: Arc<Gate>) -> std::io::Result<Self> {
        let local = socket.local_addr()?;
        Ok(Self {
            socket,
            local,
            gate,
        })
    }
}

#[async_trait]
impl Conn for GatedUdp {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(unsupported())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            let from = canonical(from);
            match self.gate.inspect(&buf[..n], from) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Answer(answer) => {
                    let _ = self
                        .socket
                        .send_to(&answer, to_socket_family(from, self.local))
                        .await;
                }
                Verdict::Drop => {}
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(unsupported())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self
            .socket
            .send_to(buf, to_socket_family(target, self.local))
            .await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        // The crate "closes" the listener whenever an allocation ends; the socket lives on until
        // the server stops.
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// TURN over TCP or TLS: every connection's frames arrive through one queue, tagged with the
/// client's address; answers go to that connection's writer.
pub struct StreamMux {
    local: SocketAddr,
    incoming: Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: std::sync::Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
}

impl StreamMux {
    /// Accepts connections on `listener` until `stop`, wrapping each in TLS when `tls` is set.
    pub fn start(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        gate: Arc<Gate>,
        registry: Arc<Registry>,
        stop: CancellationToken,
    ) -> std::io::Result<Arc<Self>> {
        let local = listener.local_addr()?;
        let (queue, incoming) = mpsc::channel(STREAM_QUEUE);
        let mux = Arc::new(Self {
            local,
            incoming: Mutex::new(incoming),
            writers: std::sync::Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&mux);
        tokio::spawn(async move {
            loop {
                let (stream, client) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::debug!(error = %e, "TURN accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = stop.cancelled() => break,
                };
                let Some(mux) = weak.upgrade() else { break };
                let _ = stream.set_nodelay(true);
                let client = canonical(client);
                let (gate, registry, queue, stop, tls) = (
                    gate.clone(),
                    registry.clone(),
                    queue.clone(),
                    stop.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    match tls {
                        None => mux.serve(stream, client, gate, queue, stop).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => {
                                    mux.serve(stream, client, gate, queue, stop).await
                                }
                                _ => tracing::debug!(%client, "TURN TLS handshake failed"),
                            }
                        }
                    }
                    // A stream client's allocation lives as long as its connection (RFC 6062).
                    let local = mux.local;
                    registry.end_where(|e| e.client == client && e.listener == local);
                });
            }
        });
        Ok(mux)
    }

    async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
        &self,
        stream: S,
        client: SocketAddr,
        gate: Arc<Gate>,
        queue: mpsc::Sender<(Vec<u8>, SocketAddr)>,
        stop: CancellationToken,
    ) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (out, mut outgoing) = mpsc::channel::<Vec<u8>>(256);
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client, out.clone());
        let write = async move {
            while let Some(frame) = outgoing.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        };
        let read = async {
            while let Some(frame) = read_frame(&mut reader).await {
                match gate.inspect(&frame, client) {
                    Verdict::Pass => {
                        if queue.send((frame, client)).await.is_err() {
                            break;
                        }
                    }
                    Verdict::Answer(answer) => {
                        if out.send(answer).await.is_err() {
                            break;
                        }
                    }
                    Verdict::Drop => {}
                }
            }
        };
        tokio::select! {
            _ = read => {}
            _ = write => {}
            _ = stop.cancelled() => {}
        }
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&client);
    }
}

/// One STUN message or ChannelData frame (with its padding) from a stream; `None` at the end of
/// the stream or on bytes that are neither.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await.ok()?;
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let rest = match header[0] >> 6 {
        // STUN: a 20-byte header, then `length` bytes of attributes.
        0 => 16 + length,
        // ChannelData: padded to a multiple of four over streams (RFC 5766 §11.5).
        1 => length.div_ceil(4) * 4,
        _ => return None,
    };
    let mut frame = vec![0u8; 4 + rest];
    frame[..4].copy_from_slice(&header);
    reader.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

#[async_trait]
impl Conn for StreamMux {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(unsupported())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut incoming = self.incoming.lock().await;
        loop {
            let (frame, from) = incoming
                .recv()
                .await
                .ok_or_else(|| webrtc_util::Error::Other("listener stopped".to_owned()))?;
            // The crate reads into a 1500-byte buffer; a larger frame cannot be a media packet.
            if frame.len() <= buf.len() {
                buf[..frame.len()].copy_from_slice(&frame);
                return Ok((frame.len(), from));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(unsupported())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let writer = self
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&target)
            .cloned();
        // Never wait for a slow client: the crate serves the whole listener from one loop. A full
        // queue drops the packet, as a full socket buffer would over UDP; so does a connection
        // that just closed (its allocation is being ended).
        if let Some(writer) = writer {
            let _ = writer.try_send(buf.to_vec());
        }
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
