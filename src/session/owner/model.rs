//! Model-based tests of the owner: several simulated processes, each an [`Owner`], share one
//! simulated store and one simulated agent, and a seeded scheduler interleaves their events at
//! random: calls sent and answered out of order, refreshes, unlocks, locks and lock alls, watch
//! events delayed, coalesced or lost, reads and writes that land at any point between their
//! start and their report, writes that fail, a lock held elsewhere, waiting calls (a
//! re-authenticator's runner among them) that go away, re-authenticators that fail, time that
//! passes (a try for the lock gives up at its time), and lock alls that begin and end at any
//! point. The invariants are checked after every step: among them, no effect asks for a lock
//! its process already holds or tries for, no waiter is answered twice, a re-authenticator runs
//! under the lock, a lock all holds it once answered so. A failure prints its seed
//! (`MODEL_SEED=<n>` runs that case alone).

use std::collections::{BTreeMap as HashMap, BTreeSet as HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::*;
use crate::error::Error;
use crate::store::{Stored, Swap, Version};
use crate::token::Token;

/// How long a try for the lock waits, as the session file's by default.
const LOCK_WAIT: Duration = Duration::from_secs(60);

mod calls;
mod edges;
mod effects;

/// A small deterministic generator (xorshift64*), so that a seed names a case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A token as a set holds it.
fn key(token: &Option<Token>) -> Option<String> {
    token.as_ref().map(|t| t.expose().to_owned())
}

/// A JWT whose `exp` is `n`: later tokens expire later, as an agent's refreshes do.
fn jwt(n: u64) -> Token {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let value = format!(
        "{}.{}.sig",
        b64(r#"{"alg":"HS256"}"#),
        b64(&format!(r#"{{"exp":{n}}}"#))
    );
    Token::new(value).expect("a well-formed token")
}

#[derive(Debug)]
struct Call {
    token: Option<Token>,
    epoch: u64,
    replayed: bool,
    /// Waiting for the owner's recovery.
    waiting: bool,
    /// The agent's answer, once it answered: `Some(refresh)` accepted, `None` refused.
    answered: Option<Option<Token>>,
}

#[derive(Debug, Default)]
struct Process {
    owner: Option<Owner>,
    calls: HashMap<u64, Call>,
    /// Calls waiting for the owner's answer, by waiter.
    waiting: HashMap<WaiterId, u64>,
    /// Re-authenticators to run: the recovery's number, and the call that runs it.
    reauths: Vec<(u64, u64)>,
    read: Option<(ReadOp, Option<Result<Stored, Error>>)>,
    write: Option<(WriteOp, Option<Result<Written, Error>>)>,
    /// The try for the re-authentication lock under way: its number and its time.
    lock_try: Option<(u64, Instant)>,
    /// The try whose lock this process holds.
    lock_held: Option<u64>,
    /// A try gave up at its time since the lock was last held: what follows may run without it.
    gave_up: bool,
    /// A lock all (`Session::clear_after`): its waiter, and whether it was answered.
    clearing: Option<(WaiterId, bool)>,
    /// Waiters numbered so far, and those answered.
    waiters: WaiterId,
    answered: HashSet<WaiterId>,
    /// A watch event not yet delivered (events coalesce).
    watch_event: bool,
    /// Every token this process read from or wrote to the store.
    seen: HashSet<Option<String>>,
    /// Tokens that failed in this process, and re-authentications run.
    failed_tokens: HashSet<Option<String>>,
    /// Tokens that came back as refreshes: no proof that the session lives (a refresh minted
    /// before a lock all is dead too), so a recovery goes on over them.
    refreshed: HashSet<Option<String>>,
    reauth_runs: u64,
}

struct World {
    rng: Rng,
    /// Whether writes fail, watch events are lost and lock waits give up.
    faults: bool,
    processes: Vec<Process>,
    store: Option<Token>,
    store_version: u64,
    /// The time every process's owner is told.
    now: Instant,
    /// Which process holds the re-authentication lock.
    lock_holder: Option<usize>,
    valid: HashSet<String>,
    minted: u64,
    next_call: u64,
    /// Calls handed a session failure after their replay, calls that succeeded, and calls
    /// whose re-authenticator failed.
    failed_calls: u64,
    ok_calls: u64,
    reauth_failed_calls: u64,
    /// Events handed to the owners.
    events: u64,
}

impl World {
    fn new(seed: u64, processes: usize) -> Self {
        let mut world = Self {
            rng: Rng(seed.max(1)),
            faults: false,
            processes: (0..processes).map(|_| Process::default()).collect(),
            store: None,
            store_version: 0,
            now: Instant::now(),
            lock_holder: None,
            valid: HashSet::new(),
            minted: 0,
            next_call: 0,
            failed_calls: 0,
            ok_calls: 0,
            reauth_failed_calls: 0,
            events: 0,
        };
        let now = world.now;
        for p in &mut world.processes {
            p.owner = Some(Owner::new(
                AgentTokens::LiveUntilExpiry,
                Some(LOCK_WAIT),
                now,
            ));
        }
        let first = world.mint();
        world.store = Some(first.clone());
        world.store_version = 1;
        for p in 0..processes {
            world.process(p).seen.insert(key(&Some(first.clone())));
            world.ask(p, Event::Start, None);
        }
        world
    }

    fn mint(&mut self) -> Token {
        self.minted += 1;
        let token = jwt(self.minted);
        self.valid.insert(token.expose().to_owned());
        token
    }

    fn process(&mut self, p: usize) -> &mut Process {
        &mut self.processes[p]
    }

    fn owner(&mut self, p: usize) -> &mut Owner {
        self.processes[p].owner.as_mut().expect("an owner")
    }

    /// An event with no waiter for `p`'s owner, and what it says to do.
    fn tell(&mut self, p: usize, event: Event) -> Option<Answer> {
        let effects = self.owner_handle(p, event);
        self.effects(p, effects, None)
    }

    /// An event with a new waiter (standing for `call`, if a call waits on it); returns the
    /// waiter and the reply, if it was answered at once.
    fn ask(
        &mut self,
        p: usize,
        event: impl FnOnce(WaiterId) -> Event,
        call: Option<u64>,
    ) -> (WaiterId, Option<Answer>) {
        self.process(p).waiters += 1;
        let waiter = self.process(p).waiters;
        let effects = self.owner_handle(p, event(waiter));
        (waiter, self.effects(p, effects, Some((waiter, call))))
    }

    fn owner_handle(&mut self, p: usize, event: Event) -> Effects {
        self.events += 1;
        let now = self.now;
        self.owner(p).handle(now, event)
    }

    fn changed(&mut self) {
        self.store_version += 1;
        for p in &mut self.processes {
            p.watch_event = true;
        }
    }

    /// One event, chosen at random.
    fn step(&mut self, faults: bool) {
        let p = self.rng.below(self.processes.len());
        match self.rng.below(20) {
            0..=2 if self.process(p).calls.len() < 6 => self.send(p, false),
            3..=4 => self.agent_answers(p),
            6..=7 => self.deliver_answer(p),
            8 => self.run_read(p),
            9 => self.run_write(p, faults),
            10 => self.deliver_io(p),
            11 => self.deliver_watch(p, faults),
            12 => self.run_reauth(p),
            5 => self.try_lock(p, faults),
            13 if self.rng.chance(20) => {
                let token = self.mint();
                self.ask(p, |w| Event::Unlock(token, w), None);
            }
            14 if self.rng.chance(10) => {
                self.ask(p, Event::Clear, None);
            }
            15 if self.rng.chance(10) => {
                // A lock all: every token ends at the agent, and one process locks.
                self.valid.clear();
                self.ask(p, Event::Clear, None);
            }
            16 => self.drop_waiting(p),
            17 if self.rng.chance(10) => self.begin_clear(p),
            18 => self.end_clear(p),
            19 => {
                // Time passes: up to half a try's bound at once.
                let secs = self.rng.below(30) as u64;
                self.now += Duration::from_secs(secs);
            }
            _ => {}
        }
    }

    /// Delivers everything, with no more faults or changes, until nothing is left: every call
    /// must be answered.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            for p in 0..self.processes.len() {
                self.agent_answers(p);
                self.deliver_answer(p);
                self.run_read(p);
                self.run_write(p, false);
                self.deliver_io(p);
                self.deliver_io(p);
                self.deliver_watch(p, false);
                self.run_reauth(p);
                self.try_lock(p, false);
                self.end_clear(p);
            }
            // Whoever still waits for another process's lock gives up at its time.
            self.now += LOCK_WAIT;
            if self.processes.iter().all(|p| {
                p.calls.is_empty() && p.read.is_none() && p.write.is_none() && p.reauths.is_empty()
            }) {
                return;
            }
        }
        let stuck: Vec<_> = self
            .processes
            .iter()
            .map(|p| (p.calls.len(), p.waiting.len(), p.reauths.len()))
            .collect();
        panic!("calls left unanswered (calls, waiting, reauths per process): {stuck:?}");
    }
}

fn run_case(seed: u64) -> (u64, u64, u64) {
    let world = run_world(seed);
    (world.ok_calls, world.failed_calls, world.events)
}

fn run_world(seed: u64) -> World {
    let mut rng = Rng(seed.max(1));
    let processes = 1 + rng.below(3);
    let mut world = World::new(seed, processes);
    let faults = rng.chance(50);
    world.faults = faults;
    for _ in 0..300 {
        world.step(faults);
    }
    world.settle();
    world
}

#[test]
fn the_owner_keeps_its_invariants_under_random_interleavings() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        Err(_) => (1..=10_000).collect(),
    };
    let (mut ok, mut failed, mut events) = (0, 0, 0);
    let started = std::time::Instant::now();
    let cases = seeds.len();
    for seed in seeds {
        let result = std::panic::catch_unwind(|| run_case(seed));
        match result {
            Ok((o, f, e)) => {
                ok += o;
                failed += f;
                events += e;
            }
            Err(e) => {
                let message = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!(
                    "the model failed at MODEL_SEED={seed}: {}",
                    message.unwrap_or_default()
                );
            }
        }
    }
    eprintln!(
        "model: {cases} seeds in {:?}, {events} events, {ok} calls answered, {failed} failed \
         after their replay",
        started.elapsed()
    );
    assert!(ok > 0);
    let _ = failed;
}
