//! Model-based tests of the owner: several simulated processes, each an [`Owner`], share one
//! simulated store and one simulated agent, and a seeded scheduler interleaves their events at
//! random: calls sent and answered out of order, refreshes, unlocks, locks and lock alls, watch
//! events delayed, coalesced or lost, reads and writes that land at any point between their
//! start and their report, writes that fail, a lock held elsewhere, waiting calls (a
//! re-authenticator's runner among them) that go away, and lock alls made holding the lock. The invariants are
//! checked after every step; a failure prints its seed (`MODEL_SEED=<n>` runs that case alone).

use std::collections::{BTreeMap as HashMap, BTreeSet as HashSet};

use base64::Engine as _;

use super::*;

mod calls;
mod edges;

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
    /// The re-authentication lock: asked for, and whether this process holds it.
    lock_asked: bool,
    lock_held: bool,
    /// Holds the lock around a lock all (`Session::clear_after`), lending it to a recovery.
    clearing: bool,
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
    /// Which process holds the re-authentication lock.
    lock_holder: Option<usize>,
    valid: HashSet<String>,
    minted: u64,
    next_call: u64,
    /// Calls handed a session failure after their replay, and calls that succeeded.
    failed_calls: u64,
    ok_calls: u64,
}

impl World {
    fn new(seed: u64, processes: usize) -> Self {
        let mut world = Self {
            rng: Rng(seed.max(1)),
            faults: false,
            processes: (0..processes).map(|_| Process::default()).collect(),
            store: None,
            store_version: 0,
            lock_holder: None,
            valid: HashSet::new(),
            minted: 0,
            next_call: 0,
            failed_calls: 0,
            ok_calls: 0,
        };
        for p in &mut world.processes {
            p.owner = Some(Owner::new(AgentTokens::LiveUntilExpiry));
        }
        let first = world.mint();
        world.store = Some(first.clone());
        world.store_version = 1;
        for p in 0..processes {
            let waiter = world.owner(p).start();
            world.process(p).seen.insert(key(&Some(first.clone())));
            world.effects(p, &[(waiter, None)]);
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

    /// Takes in what `p`'s owner said to do; `calls` maps the waiters the step made to calls.
    fn effects(&mut self, p: usize, calls: &[(WaiterId, Option<u64>)]) {
        let effects = self.owner(p).take_effects();
        let process = self.process(p);
        for (waiter, call) in calls {
            if let Some(call) = call {
                process.waiting.insert(*waiter, *call);
            }
        }
        if let Some(op) = effects.read {
            assert!(process.read.is_none(), "two reads at once");
            process.read = Some((op, None));
        }
        if let Some(op) = effects.write {
            assert!(process.write.is_none(), "two writes at once");
            process.write = Some((*op, None));
        }
        let mut released = false;
        for op in effects.lock {
            match op {
                LockOp::Take => {
                    assert!(
                        !process.lock_asked && !process.lock_held,
                        "the lock taken twice"
                    );
                    process.lock_asked = true;
                }
                // The lock all's lock, lent to a recovery that ended: it stays the lock all's.
                LockOp::Release if process.clearing && !process.lock_held => {}
                LockOp::Release => {
                    assert!(process.lock_held, "a lock released that is not held");
                    process.lock_held = false;
                    released = true;
                }
            }
        }
        if released {
            self.lock_holder = None;
        }
        for (waiter, answer) in effects.answers {
            let Some(call) = self.process(p).waiting.remove(&waiter) else {
                continue;
            };
            match answer {
                Answer::Replay => {
                    let (token, _) = self.owner(p).current();
                    assert!(token.is_some(), "a call replayed without a token");
                    let old = self.process(p).calls.remove(&call).expect("the call");
                    assert!(!old.replayed, "a call replayed twice");
                    self.send(p, true);
                }
                Answer::Reauthenticate(number) => {
                    // Once for all the calls failing together: one at a time, and only when
                    // the session holds no token that did not fail.
                    assert!(
                        self.process(p).reauths.is_empty(),
                        "two re-authentications at once"
                    );
                    let current = key(&self.owner(p).current().0.cloned());
                    assert!(
                        current.is_none()
                            || self.process(p).failed_tokens.contains(&current)
                            || self.process(p).refreshed.contains(&current),
                        "re-authenticating while the session holds a token that did not fail"
                    );
                    if !self.faults {
                        // Across processes too: a re-authenticator runs under the lock.
                        assert_eq!(
                            self.lock_holder,
                            Some(p),
                            "re-authenticating without the lock"
                        );
                    }
                    self.process(p).reauths.push((number, call));
                }
                Answer::Failed(_) | Answer::Done(_) => {
                    panic!("a call answered {answer:?}");
                }
            }
        }
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
        match self.rng.below(19) {
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
                let waiter = self.owner(p).unlock(token);
                self.effects(p, &[(waiter, None)]);
            }
            14 if self.rng.chance(10) => {
                let waiter = self.owner(p).clear();
                self.effects(p, &[(waiter, None)]);
            }
            15 if self.rng.chance(10) => {
                // A lock all: every token ends at the agent, and one process locks.
                self.valid.clear();
                let waiter = self.owner(p).clear();
                self.effects(p, &[(waiter, None)]);
            }
            16 => self.drop_waiting(p),
            17 if self.rng.chance(10) => self.begin_clear(p),
            18 => self.end_clear(p),
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

fn run_case(seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed.max(1));
    let processes = 1 + rng.below(3);
    let mut world = World::new(seed, processes);
    let faults = rng.chance(50);
    world.faults = faults;
    for _ in 0..300 {
        world.step(faults);
    }
    world.settle();
    (world.ok_calls, world.failed_calls)
}

#[test]
fn the_owner_keeps_its_invariants_under_random_interleavings() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        Err(_) => (1..=10_000).collect(),
    };
    let (mut ok, mut failed) = (0, 0);
    for seed in seeds {
        let result = std::panic::catch_unwind(|| run_case(seed));
        match result {
            Ok((o, f)) => {
                ok += o;
                failed += f;
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
    assert!(ok > 0);
    let _ = failed;
}
