//! [`Supervisor`]: Erlang/OTP-style supervision of child processes: restart strategies,
//! restart types and an intensity limit.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel::{Receiver, Sender};
use crate::error::{Error, Result};
use crate::select::{Select, Selectable, Source};
use crate::spawn::{JoinHandle, Process};

/// Which children a supervisor restarts when one of them has to be restarted.
///
/// # Examples
///
/// ```
/// let s = multiproc::Strategy::OneForOne;
/// assert_ne!(s, multiproc::Strategy::OneForAll);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only that child (the default).
    #[default]
    OneForOne,
    /// Every child: the others are stopped first, then all start again in order.
    OneForAll,
    /// That child and those started after it, which are stopped first.
    RestForOne,
}

/// When a child that ended is started again.
///
/// # Examples
///
/// ```
/// let r = multiproc::Restart::Transient;
/// assert_ne!(r, multiproc::Restart::Permanent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always, whether it failed or returned (the default).
    #[default]
    Permanent,
    /// Only after it failed (panicked, crashed, was killed); a child that returns stays done.
    Transient,
    /// Never.
    Temporary,
}

type Start = Box<dyn FnMut(&str) -> Result<Box<dyn Running>> + Send>;

struct Spec {
    name: String,
    restart: Restart,
    start: Start,
}

/// A started child, whatever its output type.
trait Running: Send {
    fn source(&self) -> Source<'_>;
    /// Its end: `Err` when it failed.
    fn finish(self: Box<Self>) -> Result<()>;
    /// Asks it to stop, kills it after `grace`.
    fn stop(self: Box<Self>, grace: Duration);
}

impl<R> Running for JoinHandle<R>
where
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn source(&self) -> Source<'_> {
        self.__source()
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.join().map(|_| ())
    }

    fn stop(self: Box<Self>, grace: Duration) {
        let _ = self.shutdown(grace);
    }
}

/// Watches a set of child processes and restarts them by a [`Strategy`] and each child's
/// [`Restart`] type; gives up, stopping them all, when they need more than `max_restarts`
/// restarts within `period` (Erlang's intensity; by default 1 in 5 s).
///
/// Each child comes from a factory that makes its `#[process]` value afresh for every start.
/// Once this process is asked to shut down ([`shutdown_requested`](crate::shutdown_requested)),
/// a child that ends is not restarted and the supervisor stops the others.
///
/// Supervisors nest: run one inside a `#[process]` function that panics (or exits) when it
/// gives up, and add that function's process as a child of the outer supervisor, which then
/// sees an abnormal exit and applies its own strategy.
/// A restarted child is a new process: give it a [`Queue`](crate::Queue) (or a
/// [`service`](crate::service)) that the factory clones into every incarnation, and the items
/// put there while it restarts wait for it; a `Receiver` cannot outlive its process's crash.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// use multiproc::{Queue, Restart, Strategy, Supervisor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Worker {
///     jobs: Queue<u32>,
/// }
///
/// #[multiproc::process]
/// impl Worker {
///     fn run(self) {
///         while let Ok(job) = self.jobs.get() {
///             assert!(job != 13, "unlucky job"); // a crash: the supervisor restarts us
///         }
///     }
/// }
///
/// #[multiproc::main]
/// fn main() -> multiproc::Result<()> {
///     let jobs = Queue::new()?;
///     let queue = jobs.clone();
///     let supervisor = Supervisor::builder()
///         .strategy(Strategy::OneForOne)
///         .intensity(3, Duration::from_secs(5))
///         .child("worker", Restart::Permanent, move || Worker { jobs: queue.clone() })
///         .start()?;
///     for job in 0..20 {
///         jobs.put(job)?;
///     }
///     jobs.close()?;
///     let report = supervisor.stop()?;
///     println!("{report:?}");
///     Ok(())
/// }
/// ```
pub struct Supervisor {
    thread: Option<std::thread::JoinHandle<Result<Report>>>,
    stop: Sender<()>,
    name: String,
}

/// Configures a [`Supervisor`]; see [`Supervisor::builder`].
/// [`Supervisor`]'s example shows it in use.
#[must_use = "a builder does nothing until `start` is called"]
pub struct SupervisorBuilder {
    name: String,
    strategy: Strategy,
    max_restarts: usize,
    period: Duration,
    grace: Duration,
    specs: Vec<Spec>,
}

/// What a supervisor did: how often each child was started.
/// [`Supervisor::stop`] and [`Supervisor::wait`] return one; their examples show it in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `(name, starts)` for each child, in the order they were added.
    pub starts: Vec<(String, usize)>,
}

impl Report {
    /// How often the child `name` was started (1 if it never restarted).
    ///
    /// # Examples
    ///
    /// ```
    /// let report = multiproc::Report { starts: vec![("a".into(), 3)] };
    /// assert_eq!(report.starts_of("a"), 3);
    /// assert_eq!(report.starts_of("b"), 0);
    /// ```
    pub fn starts_of(&self, name: &str) -> usize {
        self.starts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, s)| *s)
    }
}

impl Supervisor {
    /// A supervisor with the defaults: one-for-one, at most 1 restart in 5 s, 5 s of grace.
    /// [`Supervisor`]'s example shows it in use.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder {
            name: "supervisor".to_string(),
            strategy: Strategy::OneForOne,
            max_restarts: 1,
            period: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            specs: Vec::new(),
        }
    }

    /// Stops the children (last started first, each asked to stop and killed after the grace
    /// period) and returns the report.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{Restart, Supervisor};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Idle;
    ///
    /// #[multiproc::process]
    /// impl Idle {
    ///     fn run(self) {
    ///         while !multiproc::shutdown_requested() {
    ///             std::thread::sleep(std::time::Duration::from_millis(10));
    ///         }
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let supervisor = Supervisor::builder()
    ///         .child("idle", Restart::Permanent, || Idle)
    ///         .start()?;
    ///     let report = supervisor.stop()?; // asks `idle` to stop, and waits for it
    ///     assert_eq!(report.starts_of("idle"), 1);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The supervisor's own failure, if it gave up before: see [`wait`](Supervisor::wait).
    pub fn stop(mut self) -> Result<Report> {
        let _ = self.stop.send(());
        self.join_thread()
    }

    /// Waits until the supervisor ends by itself: every child is done and none is to be
    /// restarted (transient and temporary children), or it gave up.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{Restart, Supervisor};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Clone, Serialize, Deserialize)]
    /// struct Once;
    ///
    /// #[multiproc::process]
    /// impl Once {
    ///     fn run(self) {}
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let sup = Supervisor::builder()
    ///         .child("once", Restart::Transient, || Once)
    ///         .start()?;
    ///     assert_eq!(sup.wait()?.starts_of("once"), 1);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`](crate::ErrorKind::Other) when the children needed more restarts
    /// than the intensity allows (the message names the last failure), or a child could not
    /// be started.
    pub fn wait(mut self) -> Result<Report> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> Result<Report> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(Error::other(format!("supervisor `{}` panicked", self.name)))
            }),
            None => Err(Error::other("the supervisor was already waited for")),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop.send(());
            let _ = self.join_thread();
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Supervisor({})", self.name)
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("children", &self.specs.len())
            .finish_non_exhaustive()
    }
}

impl SupervisorBuilder {
    /// The supervisor's name, used in its errors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use multiproc::{Restart, Supervisor};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Crash;
    ///
    /// #[multiproc::process]
    /// impl Crash {
    ///     fn run(self) {
    ///         panic!("crashed");
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let err = Supervisor::builder()
    ///         .name("ingest")
    ///         .intensity(0, Duration::from_secs(5))
    ///         .child("crash", Restart::Permanent, || Crash)
    ///         .start()?
    ///         .wait()
    ///         .unwrap_err();
    ///     assert!(err.to_string().starts_with("supervisor `ingest` gave up"));
    ///     Ok(())
    /// }
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The restart strategy (default [`Strategy::OneForOne`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Strategy, Supervisor};
    ///
    /// // Children that depend on one another: when one has to restart, they all do.
    /// let builder = Supervisor::builder().strategy(Strategy::OneForAll);
    /// # drop(builder);
    /// ```
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Gives up when more than `max_restarts` restarts happen within `period` (default 1 in
    /// 5 s, as in Erlang/OTP).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use multiproc::{Restart, Supervisor};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Flaky(u32);
    ///
    /// #[multiproc::process]
    /// impl Flaky {
    ///     fn run(self) {
    ///         assert!(self.0 >= 3, "attempt {} failed", self.0);
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let mut attempt = 0;
    ///     let supervisor = Supervisor::builder()
    ///         .intensity(2, Duration::from_secs(60)) // two restarts a minute, no more
    ///         .child("flaky", Restart::Transient, move || {
    ///             attempt += 1;
    ///             Flaky(attempt)
    ///         })
    ///         .start()?;
    ///     assert_eq!(supervisor.wait()?.starts_of("flaky"), 3);
    ///     Ok(())
    /// }
    /// ```
    pub fn intensity(mut self, max_restarts: usize, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// How long a child asked to stop may take before it is killed (default 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Supervisor::builder().grace(std::time::Duration::from_secs(1));
    /// # drop(b);
    /// ```
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Adds a child, started after those added before it. `make` builds its `#[process]`
    /// value for each start.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{Restart, Supervisor};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Job;
    ///
    /// #[multiproc::process]
    /// impl Job {
    ///     fn run(self) {}
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let report = Supervisor::builder()
    ///         .child("first", Restart::Temporary, || Job)
    ///         .child("second", Restart::Temporary, || Job)
    ///         .start()?
    ///         .wait()?; // both ran once: temporary children never restart
    ///     assert_eq!(report.starts, [("first".to_string(), 1), ("second".to_string(), 1)]);
    ///     Ok(())
    /// }
    /// ```
    pub fn child<P, F>(self, name: impl Into<String>, restart: Restart, make: F) -> Self
    where
        P: Process + Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned + Send + 'static,
        F: FnMut() -> P + Send + 'static,
    {
        self.child_with(name, restart, crate::Builder::new(), make)
    }

    /// As [`child`](Self::child), each start configured by `builder` (environment, working
    /// directory, standard streams, limits, zygote); the child's name is `name`, whatever
    /// the builder says.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Server;
    ///
    /// #[multiproc::process]
    /// impl Server {
    ///     fn run(self) {
    ///         while !multiproc::shutdown_requested() {
    ///             std::thread::sleep(std::time::Duration::from_millis(10));
    ///         }
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let limited = multiproc::Builder::new()
    ///         .memory_limit(512 << 20)
    ///         .stderr(multiproc::Stdio::Prefixed);
    ///     let supervisor = multiproc::Supervisor::builder()
    ///         .child_with("server", multiproc::Restart::Permanent, limited, || Server)
    ///         .start()?;
    ///     supervisor.stop()?;
    ///     Ok(())
    /// }
    /// ```
    pub fn child_with<P, F>(
        mut self,
        name: impl Into<String>,
        restart: Restart,
        builder: crate::Builder,
        mut make: F,
    ) -> Self
    where
        P: Process + Serialize + DeserializeOwned,
        P::Output: Serialize + DeserializeOwned + Send + 'static,
        F: FnMut() -> P + Send + 'static,
    {
        self.specs.push(Spec {
            name: name.into(),
            restart,
            start: Box::new(move |name: &str| {
                let handle = builder.clone().name(name).spawn(make())?;
                Ok(Box::new(handle) as Box<dyn Running>)
            }),
        });
        self
    }

    /// Starts the children in order, and the supervisor's thread that watches them.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{Queue, Restart, Supervisor};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Hello(Queue<String>);
    ///
    /// #[multiproc::process]
    /// impl Hello {
    ///     fn run(self) {
    ///         let _ = self.0.put(multiproc::current().name().to_string());
    ///     }
    /// }
    ///
    /// #[multiproc::main]
    /// fn main() -> multiproc::Result<()> {
    ///     let names = Queue::new()?;
    ///     let queue = names.clone();
    ///     let supervisor = Supervisor::builder()
    ///         .child("greeter", Restart::Temporary, move || Hello(queue.clone()))
    ///         .start()?; // `greeter` runs from here on
    ///     assert_eq!(names.get()?, "greeter");
    ///     supervisor.wait()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The first child that cannot be started (those started before it are stopped).
    pub fn start(self) -> Result<Supervisor> {
        let (stop, stop_rx) = crate::channel::<()>()?;
        let name = self.name.clone();
        let mut state = State {
            starts: vec![0; self.specs.len()],
            running: (0..self.specs.len()).map(|_| None).collect(),
            config: self,
        };
        for i in 0..state.running.len() {
            if let Err(e) = state.start(i) {
                state.stop_from(0);
                return Err(e);
            }
        }
        let thread = std::thread::Builder::new()
            .name(format!("multiproc-supervisor-{name}"))
            .spawn(move || state.run(stop_rx))
            .map_err(|e| Error::io("cannot start the supervisor's thread", e))?;
        Ok(Supervisor {
            thread: Some(thread),
            stop,
            name,
        })
    }
}

struct State {
    config: SupervisorBuilder,
    running: Vec<Option<Box<dyn Running>>>,
    starts: Vec<usize>,
}

impl Drop for State {
    /// However the supervisor ends (a factory that panics included), its children end too.
    fn drop(&mut self) {
        self.stop_from(0);
    }
}

impl State {
    fn start(&mut self, i: usize) -> Result<()> {
        let spec = &mut self.config.specs[i];
        let child = (spec.start)(&spec.name)?;
        self.running[i] = Some(child);
        self.starts[i] += 1;
        Ok(())
    }

    /// Stops the running children from `i` on, last first.
    fn stop_from(&mut self, i: usize) {
        self.stop(i..self.running.len());
    }

    /// Stops the running children of `range`, last first; the others are left alone.
    fn stop(&mut self, range: std::ops::Range<usize>) {
        for child in self.running[range].iter_mut().rev() {
            if let Some(child) = child.take() {
                child.stop(self.config.grace);
            }
        }
    }

    /// Counts one restart against the intensity; the supervisor's error once it is exceeded.
    fn count_restart(
        &self,
        restarts: &mut VecDeque<Instant>,
        why: &Result<()>,
        child: &str,
    ) -> Result<()> {
        let now = Instant::now();
        restarts.push_back(now);
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.config.period)
        {
            restarts.pop_front();
        }
        if restarts.len() <= self.config.max_restarts {
            let why = match why {
                Ok(()) => "it returned".to_string(),
                Err(e) => e.to_string(),
            };
            crate::trace::restarting(&self.config.name, child, &why);
            return Ok(());
        }
        let last = match why {
            Err(e) => e.to_string(),
            Ok(()) => format!("`{child}` returned"),
        };
        Err(Error::other(format!(
            "supervisor `{}` gave up: more than {} restarts within {:?}; the last because {last}",
            self.config.name, self.config.max_restarts, self.config.period
        )))
    }

    fn report(&self) -> Report {
        Report {
            starts: self
                .config
                .specs
                .iter()
                .zip(&self.starts)
                .map(|(s, n)| (s.name.clone(), *n))
                .collect(),
        }
    }

    fn run(mut self, stop: Receiver<()>) -> Result<Report> {
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        loop {
            if self.running.iter().all(Option::is_none) {
                return Ok(self.report());
            }
            // Which child ended (or the stop request: index 0).
            let ready = {
                let (indices, watched): (Vec<usize>, Vec<Watched<'_>>) = self
                    .running
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| Some((i, Watched(c.as_deref()?))))
                    .unzip();
                let mut select = Select::new();
                select.add(&stop);
                for w in &watched {
                    select.add(w);
                }
                match select.ready() {
                    Ok(0) => None,
                    Ok(k) => Some(indices[k - 1]),
                    Err(e) => {
                        self.stop_from(0);
                        return Err(e);
                    }
                }
            };
            let Some(i) = ready else {
                self.stop_from(0);
                return Ok(self.report());
            };
            let child = self.running[i].take().expect("a running child");
            let result = child.finish();
            if crate::shutdown::shutdown_requested() {
                // This process is shutting down: its children stop, none restarts.
                self.stop_from(0);
                return Ok(self.report());
            }
            let spec = &self.config.specs[i];
            let child_name = spec.name.clone();
            let restart = match spec.restart {
                Restart::Permanent => true,
                Restart::Transient => result.is_err(),
                Restart::Temporary => false,
            };
            if !restart {
                continue;
            }
            if let Err(e) = self.count_restart(&mut restarts, &result, &child_name) {
                self.stop_from(0);
                return Err(e);
            }
            // The children to start again: that one, or it and its siblings (stopped first,
            // last started first). No other child is touched.
            let range = match self.config.strategy {
                Strategy::OneForOne => i..i + 1,
                Strategy::OneForAll => 0..self.running.len(),
                Strategy::RestForOne => i..self.running.len(),
            };
            self.stop(range.clone());
            for j in range {
                // A temporary child stopped by a sibling's restart stays stopped.
                let restartable = j == i || self.config.specs[j].restart != Restart::Temporary;
                if self.running[j].is_none() && restartable {
                    // A start that fails is one more failure of that child: retried until
                    // the intensity gives up, as in OTP.
                    while let Err(e) = self.start(j) {
                        let name = self.config.specs[j].name.clone();
                        if let Err(gave_up) = self.count_restart(&mut restarts, &Err(e), &name) {
                            self.stop_from(0);
                            return Err(gave_up);
                        }
                    }
                }
            }
        }
    }
}

/// A running child as a [`Selectable`].
struct Watched<'a>(&'a dyn Running);

impl Selectable for Watched<'_> {
    fn __source(&self) -> Source<'_> {
        self.0.source()
    }
}
