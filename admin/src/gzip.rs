//! gzip (RFC 1952) around raw deflate from miniz_oxide, for `/metrics` when the scraper asks
//! (Prometheus sends `Accept-Encoding: gzip` by default). A page is ~10× smaller.

/// Compresses `data` into a gzip member.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, 6);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // ID1 ID2, CM=deflate, no flags, no mtime, XFL=0, OS=unix.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected), bitwise: pages are small and scraped rarely.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trips_through_inflate() {
        let page = b"# TYPE x counter\nx_total 1\n".repeat(100);
        let gz = compress(&page);
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        let body = &gz[10..gz.len() - 8];
        let inflated = miniz_oxide::inflate::decompress_to_vec(body).unwrap();
        assert_eq!(inflated, page);
        let trailer = &gz[gz.len() - 8..];
        assert_eq!(trailer[..4], crc32(&page).to_le_bytes());
        assert_eq!(trailer[4..], (page.len() as u32).to_le_bytes());
        assert!(gz.len() < page.len() / 5);
    }
}
