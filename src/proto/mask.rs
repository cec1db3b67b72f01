//! Masking and unmasking of frame payloads (RFC 6455 §5.3).
//!
//! Owns: `apply_mask`, the fast path every received byte goes through, and `apply_mask_reference`,
//! the byte-at-a-time loop straight from §5.3 that the fast path is tested against. The fast path
//! XORs eight bytes at a time through `u64::from_ne_bytes`, which needs no alignment and no
//! `unsafe`; the compiler turns the loop into vector instructions. Invariant: both functions give
//! the same bytes for every length, buffer alignment and mask phase.

/// §5.3 as written: octet i of the payload is XORed with octet (i + phase) mod 4 of the key.
/// `phase` is the number of payload bytes already unmasked before `buf` (0 for a whole payload).
pub fn apply_mask_reference(buf: &mut [u8], mask: [u8; 4], phase: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= mask[(i + phase) & 3];
    }
}

/// XORs `buf` with the masking key, starting at key octet `phase % 4`. Applying it twice restores
/// the input, so the same function masks (client side) and unmasks (server side).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], phase: usize) {
    let mask = rotate(mask, phase);
    let word = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // Each chunk consumed a multiple of 4 key octets, so the tail starts at phase 0 again.
    apply_mask_reference(chunks.into_remainder(), mask, 0);
}

fn rotate(mask: [u8; 4], phase: usize) -> [u8; 4] {
    let p = phase & 3;
    [mask[p], mask[(p + 1) & 3], mask[(p + 2) & 3], mask[(p + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn fast_path_matches_reference_for_every_length_offset_and_phase() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..=64 {
            for offset in 0..16 {
                for phase in 0..4 {
                    let mut backing_fast = vec![0u8; offset + len];
                    let mut backing_ref = vec![0u8; offset + len];
                    backing_fast[offset..].copy_from_slice(&sample(len));
                    backing_ref[offset..].copy_from_slice(&sample(len));
                    apply_mask(&mut backing_fast[offset..], mask, phase);
                    apply_mask_reference(&mut backing_ref[offset..], mask, phase);
                    assert_eq!(backing_fast, backing_ref, "len {len} offset {offset} phase {phase}");
                }
            }
        }
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let original = sample(1000);
        let mut data = original.clone();
        apply_mask(&mut data, [1, 2, 3, 4], 0);
        assert_ne!(data, original);
        apply_mask(&mut data, [1, 2, 3, 4], 0);
        assert_eq!(data, original);
    }

    #[test]
    fn rfc_5_7_masked_hello() {
        // §5.7: "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn split_unmasking_with_phase_equals_whole() {
        let mask = [9, 8, 7, 6];
        let mut whole = sample(37);
        let mut split = whole.clone();
        apply_mask(&mut whole, mask, 0);
        let (a, b) = split.split_at_mut(11);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 11);
        assert_eq!(whole, split);
    }
}
