//! Maglev lookup tables (Eisenbud et al., NSDI 2016), built in userspace.
//!
//! Each backend gets a permutation of the table's entries from two hashes of its address; the
//! backends take turns claiming their next preferred free entry until the table is full. Every
//! backend owns about `M/N` entries, and removing one backend moves only the entries it owned
//! (plus a few more), so most clients keep their backend.

use podd_lb_common::MAGLEV_TABLE_SIZE;
use std::net::SocketAddrV4;

fn fnv1a(seed: u64, addr: &SocketAddrV4) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in addr
        .ip()
        .octets()
        .into_iter()
        .chain(addr.port().to_be_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final mix so that close addresses spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Builds the table: entry `i` is an index into `backends`. The result depends only on the set
/// of backends (they are sorted first). Empty input gives an empty table.
pub fn build_table(backends: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
    let m = MAGLEV_TABLE_SIZE as u64;
    let mut sorted = backends.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.is_empty() {
        return Vec::new();
    }
    let perms: Vec<(u64, u64)> = sorted
        .iter()
        .map(|b| (fnv1a(1, b) % m, fnv1a(2, b) % (m - 1) + 1))
        .collect();
    let mut next = vec![0u64; sorted.len()];
    let mut table: Vec<Option<usize>> = vec![None; m as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while table[c as usize].is_some() {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            table[c as usize] = Some(i);
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
        .into_iter()
        .map(|e| sorted[e.expect("table is full")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn backends(n: u8) -> Vec<SocketAddrV4> {
        (1..=n)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, i), 8080))
            .collect()
    }

    #[test]
    fn every_backend_gets_a_fair_share() {
        for n in [1u8, 3, 10, 50] {
            let t = build_table(&backends(n));
            assert_eq!(t.len(), MAGLEV_TABLE_SIZE as usize);
            let mut counts: HashMap<SocketAddrV4, usize> = HashMap::new();
            for b in &t {
                *counts.entry(*b).or_default() += 1;
            }
            assert_eq!(counts.len(), n as usize);
            let ideal = MAGLEV_TABLE_SIZE as f64 / n as f64;
            for c in counts.values() {
                // Maglev's guarantee: within a small margin of M/N.
                assert!(
                    (*c as f64 - ideal).abs() <= ideal * 0.15 + 2.0,
                    "{n}: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn removing_a_backend_moves_little_else() {
        let all = backends(10);
        let before = build_table(&all);
        let removed = all[3];
        let after = build_table(
            &all.iter()
                .copied()
                .filter(|b| *b != removed)
                .collect::<Vec<_>>(),
        );
        let moved_others = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != removed && b != a)
            .count();
        // Only entries owned by the removed backend must move; allow a small extra churn.
        assert!(
            moved_others < MAGLEV_TABLE_SIZE as usize / 10,
            "{moved_others}"
        );
        assert!(!after.contains(&removed));
    }

    #[test]
    fn order_does_not_matter() {
        let mut b = backends(7);
        let t1 = build_table(&b);
        b.reverse();
        assert_eq!(t1, build_table(&b));
    }
}
