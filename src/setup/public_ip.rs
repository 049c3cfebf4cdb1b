//! This box's public address as the internet sees it, asked of STUN servers (RFC 8489 binding
//! request over UDP). Deliberately one small function: the TURN relay has its own STUN client,
//! which can replace this one.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use tokio::net::UdpSocket;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The address the first answering STUN server (`host:port`) saw, or `None`.
pub async fn detect(stun_servers: &[String]) -> Option<IpAddr> {
    for server in stun_servers {
        if let Ok(Some(ip)) = tokio::time::timeout(ATTEMPT_TIMEOUT, ask(server)).await {
            return Some(ip);
        }
    }
    None
}

async fn ask(server: &str) -> Option<IpAddr> {
    let target = tokio::net::lookup_host(server).await.ok()?.next()?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).await.ok()?;
    let transaction: [u8; 12] = rand::random();
    let mut request = vec![0x00, 0x01, 0x00, 0x00];
    request.extend_from_slice(&MAGIC_COOKIE);
    request.extend_from_slice(&transaction);
    socket.send_to(&request, target).await.ok()?;
    let mut buffer = [0u8; 512];
    let (length, _) = socket.recv_from(&mut buffer).await.ok()?;
    parse_binding_response(&buffer[..length], &transaction)
}

/// The (XOR-)MAPPED-ADDRESS of a binding success response to `transaction`.
fn parse_binding_response(message: &[u8], transaction: &[u8; 12]) -> Option<IpAddr> {
    if message.len() < 20
        || message[0..2] != [0x01, 0x01]
        || message[4..8] != MAGIC_COOKIE
        || &message[8..20] != transaction
    {
        return None;
    }
    let mut attributes = &message[20..];
    let mut mapped = None;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let length = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + length)?;
        match kind {
            0x0020 => return decode_address(value, Some(transaction)),
            0x0001 => mapped = decode_address(value, None),
            _ => {}
        }
        // Attributes are padded to four bytes.
        attributes = attributes
            .get(4 + length.div_ceil(4) * 4..)
            .unwrap_or_default();
    }
    mapped
}

fn decode_address(value: &[u8], xor_with: Option<&[u8; 12]>) -> Option<IpAddr> {
    let family = *value.get(1)?;
    let mut mask = MAGIC_COOKIE.to_vec();
    if let Some(transaction) = xor_with {
        mask.extend_from_slice(transaction);
    } else {
        mask = vec![0; 16];
    }
    let bytes: Vec<u8> = match family {
        0x01 => value.get(4..8)?.to_vec(),
        0x02 => value.get(4..20)?.to_vec(),
        _ => return None,
    };
    let plain: Vec<u8> = bytes.iter().zip(mask.iter()).map(|(b, m)| b ^ m).collect();
    Some(match family {
        0x01 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(plain).ok()?)),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(plain).ok()?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_xor_mapped_address() {
        let transaction = [7u8; 12];
        // 203.0.113.5 xor 0x2112A442, port 0x1234 xor 0x2112.
        let ip = [203u8 ^ 0x21, 0x12, 113 ^ 0xA4, 5 ^ 0x42];
        let mut message = vec![0x01, 0x01, 0x00, 12];
        message.extend_from_slice(&MAGIC_COOKIE);
        message.extend_from_slice(&transaction);
        message.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0x33, 0x26]);
        message.extend_from_slice(&ip);
        assert_eq!(
            parse_binding_response(&message, &transaction),
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)))
        );
        assert_eq!(parse_binding_response(&message, &[8u8; 12]), None);
    }
}
