//! Pure planning of map updates: from what the maps hold to what they should hold, as an ordered
//! list of single-element writes, so that a program running between any two writes sees a
//! consistent service.
//!
//! Rules, per service:
//! 1. new backend slots beyond the published count are written first (invisible until published);
//! 2. published slots whose backend changes are overwritten in place (each write is atomic: a
//!    reader sees the old or the new backend, both valid until the sync returns);
//! 3. the Maglev table entries that change are overwritten, all entries existing before the
//!    service publishes a non-zero count;
//! 4. the service value (count, flags) is published;
//! 5. slots and table entries beyond the new count are deleted, now that nobody reads them.
//!
//! A removed service is unpublished first, then its slots are deleted. Existing backends keep
//! their slot (so ClientIP affinity survives unrelated changes); a freed slot takes a newcomer,
//! else the last slot moves into it.

use crate::maglev;
use crate::spec::{Frontend, Selection, ServiceEntry};
use podd_lb_common::{
    Backend, BackendKey, FLAG_AFFINITY_CLIENT_IP, FLAG_MAGLEV, MAX_SERVICES, MaglevKey, ServiceKey,
    ServiceValue, ip_from_map, ip_to_map, port_from_map, port_to_map,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// One map write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    PutBackend(BackendKey, Backend),
    DelBackend(BackendKey),
    PutMaglev(MaglevKey, Backend),
    DelMaglev(MaglevKey),
    PutService(ServiceKey, ServiceValue),
    DelService(ServiceKey),
    ResetStats(u32),
}

/// What the maps hold for one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Programmed {
    pub id: u32,
    pub flags: u32,
    /// Slot `i` holds `slots[i]`; `slots.len()` is the published count.
    pub slots: Vec<Backend>,
    /// The Maglev table (empty unless `FLAG_MAGLEV` and count > 0).
    pub maglev: Vec<Backend>,
}

/// Planning failed; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("service {0:?} appears twice in the desired set; merge its backends into one entry")]
    Duplicate(Frontend),
    #[error(
        "too many service ports: the maps hold at most {MAX_SERVICES}; remove services or raise MAX_SERVICES"
    )]
    TooManyServices,
}

/// The loader's view of the maps.
#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    pub services: HashMap<ServiceKey, Programmed>,
    pub free_ids: BTreeSet<u32>,
    pub next_id: u32,
}

pub(crate) fn service_key(f: &Frontend) -> ServiceKey {
    ServiceKey {
        vip: ip_to_map(u32::from(f.vip)),
        port: port_to_map(f.port),
        proto: f.protocol.number(),
        pad: 0,
    }
}

pub(crate) fn frontend_of(k: &ServiceKey) -> Option<Frontend> {
    Some(Frontend {
        vip: Ipv4Addr::from(ip_from_map(k.vip)),
        port: port_from_map(k.port),
        protocol: crate::spec::Protocol::from_number(k.proto)?,
    })
}

pub(crate) fn to_backend(a: &SocketAddrV4) -> Backend {
    Backend {
        ip: ip_to_map(u32::from(*a.ip())),
        port: port_to_map(a.port()),
        pad: 0,
    }
}

pub(crate) fn from_backend(b: &Backend) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip_from_map(b.ip)), port_from_map(b.port))
}

fn flags_of(s: Selection) -> u32 {
    match s {
        Selection::Random => 0,
        Selection::ClientIp => FLAG_AFFINITY_CLIENT_IP,
        Selection::Maglev => FLAG_MAGLEV,
    }
}

fn value(p: &Programmed) -> ServiceValue {
    ServiceValue {
        id: p.id,
        count: p.slots.len() as u32,
        flags: p.flags,
        pad: 0,
    }
}

/// New slot layout: backends that stay keep their slot.
fn layout(old: &[Backend], desired: &[Backend]) -> Vec<Backend> {
    let wanted: HashSet<Backend> = desired.iter().copied().collect();
    let mut slots: Vec<Option<Backend>> = old
        .iter()
        .map(|b| wanted.contains(b).then_some(*b))
        .collect();
    let kept: HashSet<Backend> = slots.iter().flatten().copied().collect();
    let mut newcomers = desired.iter().filter(|b| !kept.contains(b)).copied();
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        match newcomers.next() {
            Some(b) => *slot = Some(b),
            None => break,
        }
    }
    slots.extend(newcomers.map(Some));
    // Compact: move the last backend into the first hole.
    loop {
        while slots.last().is_some_and(|s| s.is_none()) {
            slots.pop();
        }
        let Some(hole) = slots.iter().position(|s| s.is_none()) else {
            break;
        };
        slots[hole] = slots.pop().flatten();
    }
    slots.into_iter().flatten().collect()
}

fn maglev_table(flags: u32, slots: &[Backend]) -> Vec<Backend> {
    if flags & FLAG_MAGLEV == 0 || slots.is_empty() {
        return Vec::new();
    }
    let addrs: Vec<SocketAddrV4> = slots.iter().map(from_backend).collect();
    maglev::build_table(&addrs).iter().map(to_backend).collect()
}

fn dedup(backends: &[SocketAddrV4]) -> Vec<Backend> {
    let mut out: Vec<Backend> = backends.iter().map(to_backend).collect();
    // Small lists: a quadratic scan beats hashing.
    if out.len() <= 32 {
        let mut i = 0;
        while i < out.len() {
            if out[..i].contains(&out[i]) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
        return out;
    }
    let mut seen = HashSet::new();
    out.retain(|b| seen.insert(*b));
    out
}

impl State {
    fn alloc_id(&mut self) -> Result<u32, PlanError> {
        if let Some(id) = self.free_ids.pop_first() {
            return Ok(id);
        }
        if self.next_id >= MAX_SERVICES {
            return Err(PlanError::TooManyServices);
        }
        self.next_id += 1;
        Ok(self.next_id - 1)
    }

    /// Plans the writes that bring the maps from `self` to `desired`, and updates `self` to the
    /// state they produce.
    pub fn plan(&mut self, desired: &[ServiceEntry]) -> Result<Vec<Op>, PlanError> {
        let mut want: HashMap<ServiceKey, (u32, Vec<Backend>)> =
            HashMap::with_capacity(desired.len());
        for e in desired {
            let k = service_key(&e.frontend);
            if want
                .insert(k, (flags_of(e.selection), dedup(&e.backends)))
                .is_some()
            {
                return Err(PlanError::Duplicate(e.frontend));
            }
        }
        let new_count = want
            .keys()
            .filter(|k| !self.services.contains_key(k))
            .count();
        let removed: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        let available =
            self.free_ids.len() + removed.len() + (MAX_SERVICES - self.next_id) as usize;
        if new_count > available {
            return Err(PlanError::TooManyServices);
        }

        let mut ops = Vec::new();
        for k in removed {
            let p = self.services.remove(&k).expect("listed above");
            ops.push(Op::DelService(k));
            ops.extend((0..p.slots.len() as u32).map(|slot| {
                Op::DelBackend(BackendKey {
                    service_id: p.id,
                    slot,
                })
            }));
            ops.extend((0..p.maglev.len() as u32).map(|index| {
                Op::DelMaglev(MaglevKey {
                    service_id: p.id,
                    index,
                })
            }));
            self.free_ids.insert(p.id);
        }
        for (k, (flags, backends)) in want {
            match self.services.get_mut(&k) {
                // Fast path for the common case of a full re-sync: nothing changed.
                Some(old) if old.flags == flags && old.slots == backends => {}
                Some(old) => update(k, old, flags, &backends, &mut ops),
                None => {
                    let id = self.alloc_id()?;
                    ops.push(Op::ResetStats(id));
                    let mut p = Programmed {
                        id,
                        flags,
                        slots: Vec::new(),
                        maglev: Vec::new(),
                    };
                    // Unpublished: `update` writes everything before the service value.
                    update_unpublished(k, &mut p, &backends, &mut ops);
                    self.services.insert(k, p);
                }
            }
        }
        Ok(ops)
    }
}

fn update_unpublished(k: ServiceKey, p: &mut Programmed, backends: &[Backend], ops: &mut Vec<Op>) {
    p.slots = backends.to_vec();
    p.maglev = maglev_table(p.flags, &p.slots);
    for (slot, b) in p.slots.iter().enumerate() {
        ops.push(Op::PutBackend(
            BackendKey {
                service_id: p.id,
                slot: slot as u32,
            },
            *b,
        ));
    }
    for (index, b) in p.maglev.iter().enumerate() {
        ops.push(Op::PutMaglev(
            MaglevKey {
                service_id: p.id,
                index: index as u32,
            },
            *b,
        ));
    }
    ops.push(Op::PutService(k, value(p)));
}

fn update(k: ServiceKey, old: &mut Programmed, flags: u32, desired: &[Backend], ops: &mut Vec<Op>) {
    let id = old.id;
    let slots = layout(&old.slots, desired);
    let table = maglev_table(flags, &slots);
    let bkey = |slot: usize| BackendKey {
        service_id: id,
        slot: slot as u32,
    };
    let mkey = |index: usize| MaglevKey {
        service_id: id,
        index: index as u32,
    };
    // 1. slots beyond the published count.
    for (i, b) in slots.iter().enumerate().skip(old.slots.len()) {
        ops.push(Op::PutBackend(bkey(i), *b));
    }
    // 2. published slots that change.
    for (i, (o, n)) in old.slots.iter().zip(&slots).enumerate() {
        if o != n {
            ops.push(Op::PutBackend(bkey(i), *n));
        }
    }
    // 3. Maglev entries that change (new ones included).
    for (i, n) in table.iter().enumerate() {
        if old.maglev.get(i) != Some(n) {
            ops.push(Op::PutMaglev(mkey(i), *n));
        }
    }
    // 4. publish.
    let before = value(old);
    let old_slots = std::mem::replace(&mut old.slots, slots);
    let old_table = std::mem::replace(&mut old.maglev, table);
    old.flags = flags;
    let after = value(old);
    if before != after {
        ops.push(Op::PutService(k, after));
    }
    // 5. what nobody reads any more.
    for i in old.slots.len()..old_slots.len() {
        ops.push(Op::DelBackend(bkey(i)));
    }
    for i in old.maglev.len()..old_table.len() {
        ops.push(Op::DelMaglev(mkey(i)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Protocol;
    use podd_lb_common::MAGLEV_TABLE_SIZE;
    use proptest::prelude::*;

    /// A model of the maps that checks, after every single write, what a program could see.
    #[derive(Default)]
    struct Model {
        services: HashMap<ServiceKey, ServiceValue>,
        backends: HashMap<BackendKey, Backend>,
        maglev: HashMap<MaglevKey, Backend>,
    }

    impl Model {
        fn apply(&mut self, op: &Op) {
            match *op {
                Op::PutBackend(k, v) => {
                    self.backends.insert(k, v);
                }
                Op::DelBackend(k) => {
                    assert!(self.backends.remove(&k).is_some(), "deleting absent {k:?}");
                }
                Op::PutMaglev(k, v) => {
                    self.maglev.insert(k, v);
                }
                Op::DelMaglev(k) => {
                    assert!(self.maglev.remove(&k).is_some(), "deleting absent {k:?}");
                }
                Op::PutService(k, v) => {
                    self.services.insert(k, v);
                }
                Op::DelService(k) => {
                    assert!(self.services.remove(&k).is_some());
                }
                Op::ResetStats(_) => {}
            }
        }

        /// Every published service shows only backends from `allowed`, with every slot present.
        fn check_service(&self, k: &ServiceKey, allowed: &HashMap<ServiceKey, HashSet<Backend>>) {
            let Some(v) = self.services.get(k) else {
                return;
            };
            let ok = &allowed[k];
            for slot in 0..v.count {
                let b = self.backends.get(&BackendKey {
                    service_id: v.id,
                    slot,
                });
                let b = b.unwrap_or_else(|| panic!("slot {slot} of {k:?} missing"));
                assert!(ok.contains(b), "{b:?} visible for {k:?}");
            }
            if v.flags & FLAG_MAGLEV != 0 && v.count > 0 {
                for index in 0..MAGLEV_TABLE_SIZE {
                    let b = self.maglev.get(&MaglevKey {
                        service_id: v.id,
                        index,
                    });
                    assert!(ok.contains(b.expect("maglev entry missing")));
                }
            }
        }

        fn check_all(&self, allowed: &HashMap<ServiceKey, HashSet<Backend>>) {
            for k in self.services.keys() {
                self.check_service(k, allowed);
            }
        }

        /// What a program can see right after `op`: checks only the service `op` touched.
        fn check_after(&self, op: &Op, allowed: &HashMap<ServiceKey, HashSet<Backend>>) {
            let id = match *op {
                Op::PutBackend(k, _) | Op::DelBackend(k) => k.service_id,
                Op::PutMaglev(k, _) | Op::DelMaglev(k) => k.service_id,
                Op::PutService(k, _) => return self.check_service(&k, allowed),
                Op::DelService(_) | Op::ResetStats(_) => return,
            };
            let Some((k, v)) = self.services.iter().find(|(_, v)| v.id == id) else {
                return;
            };
            match *op {
                Op::PutBackend(bk, b) if bk.slot < v.count => assert!(allowed[k].contains(&b)),
                Op::DelBackend(bk) => assert!(bk.slot >= v.count, "deleted a published slot"),
                Op::PutMaglev(_, b) if v.flags & FLAG_MAGLEV != 0 && v.count > 0 => {
                    assert!(allowed[k].contains(&b))
                }
                Op::DelMaglev(_) => {
                    assert!(
                        v.flags & FLAG_MAGLEV == 0 || v.count == 0,
                        "deleted a live entry"
                    )
                }
                _ => {}
            }
        }
    }

    fn entry(vip: u8, selection: Selection, backends: &[u8]) -> ServiceEntry {
        ServiceEntry {
            frontend: Frontend {
                vip: Ipv4Addr::new(10, 96, 0, vip),
                port: 80,
                protocol: Protocol::Tcp,
            },
            selection,
            backends: backends
                .iter()
                .map(|b| SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, *b), 8080))
                .collect(),
        }
    }

    fn sets(desired: &[ServiceEntry]) -> HashMap<ServiceKey, HashSet<Backend>> {
        desired
            .iter()
            .map(|e| {
                (
                    service_key(&e.frontend),
                    e.backends.iter().map(to_backend).collect(),
                )
            })
            .collect()
    }

    /// Applies `next` after `prev`, checking every intermediate state.
    fn step(state: &mut State, model: &mut Model, prev: &[ServiceEntry], next: &[ServiceEntry]) {
        let mut allowed = sets(prev);
        for (k, s) in sets(next) {
            allowed.entry(k).or_default().extend(s);
        }
        let ops = state.plan(next).unwrap();
        for op in &ops {
            model.apply(op);
            model.check_after(op, &allowed);
        }
        // Finally exactly the new state.
        let exact = sets(next);
        model.check_all(&exact);
        assert_eq!(model.services.len(), next.len());
        let expected_slots: usize = state.services.values().map(|p| p.slots.len()).sum();
        assert_eq!(model.backends.len(), expected_slots);
        for e in next {
            let v = model.services[&service_key(&e.frontend)];
            assert_eq!(v.count as usize, exact[&service_key(&e.frontend)].len());
        }
    }

    #[test]
    fn one_backend_change_is_one_write() {
        let mut state = State::default();
        let mut model = Model::default();
        let a = vec![
            entry(1, Selection::Random, &[1, 2, 3]),
            entry(2, Selection::Random, &[4]),
        ];
        step(&mut state, &mut model, &[], &a);
        let b = vec![
            entry(1, Selection::Random, &[1, 9, 3]),
            entry(2, Selection::Random, &[4]),
        ];
        let ops = state.clone().plan(&b).unwrap();
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert!(matches!(
            ops[0],
            Op::PutBackend(BackendKey { slot: 1, .. }, _)
        ));
        step(&mut state, &mut model, &a, &b);
        assert!(
            state.clone().plan(&b).unwrap().is_empty(),
            "re-sync is a no-op"
        );
    }

    #[test]
    fn removal_shrinks_before_deleting() {
        let mut state = State::default();
        let mut model = Model::default();
        let a = vec![entry(1, Selection::Random, &[1, 2, 3])];
        step(&mut state, &mut model, &[], &a);
        let b = vec![entry(1, Selection::Random, &[1, 3])];
        let ops = state.clone().plan(&b).unwrap();
        // slot 1 takes backend 3 from slot 2, count becomes 2, slot 2 is deleted.
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(matches!(
            ops[1],
            Op::PutService(_, ServiceValue { count: 2, .. })
        ));
        assert!(matches!(ops[2], Op::DelBackend(BackendKey { slot: 2, .. })));
        step(&mut state, &mut model, &a, &b);
        let c = vec![entry(1, Selection::Random, &[])];
        let ops = state.clone().plan(&c).unwrap();
        assert!(matches!(
            ops[0],
            Op::PutService(_, ServiceValue { count: 0, .. })
        ));
        step(&mut state, &mut model, &b, &c);
    }

    #[test]
    fn ids_are_reused() {
        let mut state = State::default();
        let mut model = Model::default();
        let a = vec![
            entry(1, Selection::Random, &[1]),
            entry(2, Selection::Random, &[1]),
        ];
        step(&mut state, &mut model, &[], &a);
        let b = vec![entry(3, Selection::Random, &[1])];
        step(&mut state, &mut model, &a, &b);
        assert_eq!(state.next_id, 2);
    }

    fn arb_entries() -> impl Strategy<Value = Vec<ServiceEntry>> {
        proptest::collection::btree_map(
            1u8..6,
            (
                prop_oneof![
                    Just(Selection::Random),
                    Just(Selection::ClientIp),
                    Just(Selection::Maglev)
                ],
                proptest::collection::vec(1u8..12, 0..8),
            ),
            0..5,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(vip, (sel, b))| entry(vip, sel, &b))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any sequence of desired states: no intermediate state shows a backend that is in
        /// neither the old nor the new set, or a missing slot; the end state is exact.
        #[test]
        fn every_intermediate_state_is_consistent(seq in proptest::collection::vec(arb_entries(), 1..6)) {
            let mut state = State::default();
            let mut model = Model::default();
            let mut prev: Vec<ServiceEntry> = Vec::new();
            for next in seq {
                step(&mut state, &mut model, &prev, &next);
                prev = next;
            }
        }
    }
}
