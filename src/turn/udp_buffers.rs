//! Socket buffers of the relay's UDP sockets. The kernel's default receive buffer (208 KiB)
//! holds about two hundred full-size media packets: a pause of a few tens of milliseconds (the
//! process busy with something else on a small board) drops a busy call's packets. The relay
//! asks for more; the kernel grants up to `net.core.rmem_max` / `wmem_max` (twice the default
//! without raising them with sysctl), so the request is an upper bound, never an error.

use tokio::net::UdpSocket;

const BUFFER_BYTES: usize = 4 * 1024 * 1024;

pub fn enlarge(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_recv_buffer_size(BUFFER_BYTES) {
        tracing::debug!("TURN relay: cannot enlarge a UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(BUFFER_BYTES) {
        tracing::debug!("TURN relay: cannot enlarge a UDP send buffer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_grow_beyond_the_default() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        enlarge(&socket);
        let after = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        assert!(after > before, "{before} -> {after}");
    }
}
