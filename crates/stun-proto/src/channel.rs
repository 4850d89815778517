//! ChannelData framing (RFC 8656 §12.4): a 4-byte header, channel number and length,
//! in front of application data. This is the hot path of a relay, so nothing here
//! allocates.

/// Valid channel numbers. RFC 8656 §12 narrowed the range to 0x4000-0x4FFF, but clients
/// written against RFC 5766 §11 (coturn's own `turnutils_uclient` among them) still pick
/// numbers up to 0x7FFF, and nothing else can start with the bits 01 on a TURN connection,
/// so the old range is accepted.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;
/// Size of the ChannelData header.
pub const CHANNEL_HEADER_LEN: usize = 4;

/// True if the first byte marks a ChannelData message (first two bits 01, RFC 5766 §11).
pub fn is_channel_data(buf: &[u8]) -> bool {
    !buf.is_empty() && (0x40..=0x7F).contains(&buf[0])
}

/// Splits a ChannelData message into (channel, payload). Over UDP the datagram may carry
/// padding after the payload (RFC 8656 §12.5), which is ignored; a length beyond the
/// buffer is malformed.
pub fn parse_channel_data(buf: &[u8]) -> Option<(u16, &[u8])> {
    if buf.len() < CHANNEL_HEADER_LEN {
        return None;
    }
    let ch = u16::from_be_bytes([buf[0], buf[1]]);
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&ch) {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    buf.get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)
        .map(|p| (ch, p))
}

/// The ChannelData header for `len` payload bytes on `channel`.
pub fn channel_header(channel: u16, len: usize) -> [u8; 4] {
    let c = channel.to_be_bytes();
    let l = (len as u16).to_be_bytes();
    [c[0], c[1], l[0], l[1]]
}

/// For stream transports: total frame length of the ChannelData at the start of `buf`,
/// including the padding to a multiple of 4 that RFC 8656 §12.5 requires over TCP.
pub fn channel_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < CHANNEL_HEADER_LEN {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    Some(CHANNEL_HEADER_LEN + ((len + 3) & !3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut frame = channel_header(0x4001, 3).to_vec();
        frame.extend_from_slice(b"abc\0");
        assert_eq!(parse_channel_data(&frame), Some((0x4001, &b"abc"[..])));
        assert_eq!(channel_frame_len(&frame), Some(8));
        assert!(is_channel_data(&frame));
        // Length beyond the datagram.
        let bad = channel_header(0x4001, 100);
        assert_eq!(parse_channel_data(&bad), None);
        // Channel number outside 0x4000..=0x7FFF.
        let mut bad = channel_header(0x8000, 0).to_vec();
        bad.extend_from_slice(&[0; 4]);
        assert_eq!(parse_channel_data(&bad), None);
    }
}
