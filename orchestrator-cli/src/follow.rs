//! Following a job as it runs: its journal from the store, then the
//! executor's live events, folded into a [`JobView`] by the same code the
//! engine uses, so what is shown is exactly what is journaled. Also the
//! Ctrl-C handling of the commands that follow jobs.

use orchestrator_core::executor::Lagged;
use orchestrator_core::journal::{JobView, Record};
use orchestrator_core::{Event, Executor, ExecutorError, JobId, StoreError, StoreExt};
use tokio::sync::mpsc;

use crate::error::CliError;

/// What a display of a followed job is told.
pub(crate) trait Reporter {
    /// Following starts; `view` is the job as of the records that are not
    /// shown (at least the first, which names the job and its nodes).
    fn begin(&mut self, view: &JobView);
    /// `record` was folded into `view`.
    fn record(&mut self, view: &JobView, record: &Record);
    /// A message from the command itself (e.g. about Ctrl-C).
    fn note(&mut self, text: &str);
    /// The job is over (or following stopped).
    fn end(&mut self, view: &JobView);
}

/// Ctrl-C presses, counted across everything a command follows.
pub(crate) struct Interrupts {
    rx: mpsc::UnboundedReceiver<()>,
    count: u32,
}

impl Interrupts {
    /// Starts catching Ctrl-C (SIGINT). From here on it no longer kills
    /// the process; the command decides. Must be called within a runtime.
    pub(crate) fn install() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        // The handler is registered now, not when the task first runs, so
        // an interrupt that comes right after this call is not lost.
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut sigint = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                while sigint.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        Ok(Self { rx, count: 0 })
    }

    /// Completes at the next Ctrl-C.
    pub(crate) async fn wait(&mut self) {
        if self.rx.recv().await.is_some() {
            self.count += 1;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// The cancellation reason journaled for a Ctrl-C.
pub(crate) const INTERRUPT_REASON: &str = "interrupted (Ctrl-C)";

/// Follows jobs of one executor.
pub(crate) struct Follower<'a> {
    pub(crate) executor: &'a Executor,
    pub(crate) interrupts: &'a mut Interrupts,
    /// The store as the user named it, for messages.
    pub(crate) store_name: &'a str,
    /// Whether the store outlives the process.
    pub(crate) persistent: bool,
}

impl Follower<'_> {
    /// Follows job `id` until it is over and returns its final view.
    /// Records after `show_after` are reported (0: the whole journal).
    ///
    /// The first Ctrl-C cancels every job this executor runs (and keeps
    /// following, so the cancellation shows); the second one returns
    /// [`CliError::Killed`] at once.
    pub(crate) async fn follow(
        &mut self,
        id: &JobId,
        show_after: u64,
        reporter: &mut dyn Reporter,
    ) -> Result<JobView, CliError> {
        // Subscribe before reading: every record is then in what is read,
        // or in the feed, or in both (and skipped the second time).
        let mut feed = self.executor.subscribe();
        let records = self.read(id, 0).await?;
        let Some(first) = records.first() else {
            return Err(CliError::from_store(
                StoreError::NotFound { job: id.clone() },
                self.store_name,
            ));
        };
        // Fold what is not to be shown; the first record (the header) always,
        // since a view starts from it.
        let shown = records
            .iter()
            .position(|r| r.seq > show_after)
            .unwrap_or(records.len());
        let folded = shown.max(1);
        let mut view = JobView::replay(&records[..folded]).map_err(|e| corrupt(id, &e))?;
        reporter.begin(&view);
        if shown == 0 {
            reporter.record(&view, first);
        }
        for r in &records[folded..] {
            Self::fold(id, &mut view, r, reporter)?;
        }

        while !view.state.is_terminal() {
            tokio::select! {
                got = feed.recv() => match got {
                    // A report the executor could not journal (a stuck
                    // job): shown, never folded.
                    Ok(Some(n)) if n.job == *id && !n.journaled => {
                        if let Event::EscalationRequired { reason, .. } = &n.record.event {
                            reporter.note(&format!("escalation required (not journaled): {reason}"));
                        }
                    }
                    Ok(Some(n)) if n.job == *id => {
                        if n.record.seq > view.version + 1 {
                            self.catch_up(id, &mut view, reporter).await?;
                        }
                        if n.record.seq == view.version + 1 {
                            Self::fold(id, &mut view, &n.record, reporter)?;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(CliError::Executor(ExecutorError::ShutDown));
                    }
                    Err(Lagged(_)) => self.catch_up(id, &mut view, reporter).await?,
                },
                () = self.interrupts.wait() => self.interrupted(reporter).await?,
            }
        }
        reporter.end(&view);
        Ok(view)
    }

    /// Reacts to a Ctrl-C.
    async fn interrupted(&mut self, reporter: &mut dyn Reporter) -> Result<(), CliError> {
        if self.interrupts.count >= 2 {
            return Err(CliError::Killed {
                persistent: self.persistent,
            });
        }
        reporter.note("interrupt: cancelling; running attempts are being stopped (press Ctrl-C again to stop at once)");
        let jobs = self
            .executor
            .active_jobs()
            .await
            .map_err(CliError::Executor)?;
        // Cancel in the background: a stalled store must not keep the
        // second Ctrl-C from being noticed.
        let executor = self.executor.clone();
        tokio::spawn(async move {
            for job in jobs {
                match executor.cancel(&job, Some(INTERRUPT_REASON.into())).await {
                    Ok(()) | Err(ExecutorError::AlreadyFinished { .. }) => {}
                    Err(e) => tracing::warn!(%job, error = %e, "could not cancel the job"),
                }
            }
        });
        Ok(())
    }

    /// Reads the records after `after` from the store.
    async fn read(&self, id: &JobId, after: u64) -> Result<Vec<Record>, CliError> {
        self.executor
            .store()
            .read_all(id, after)
            .await
            .map_err(|e| CliError::from_store(e, self.store_name))
    }

    /// Folds in whatever the feed skipped, from the store.
    async fn catch_up(
        &self,
        id: &JobId,
        view: &mut JobView,
        reporter: &mut dyn Reporter,
    ) -> Result<(), CliError> {
        for r in self.read(id, view.version).await? {
            Self::fold(id, view, &r, reporter)?;
        }
        Ok(())
    }

    fn fold(
        id: &JobId,
        view: &mut JobView,
        record: &Record,
        reporter: &mut dyn Reporter,
    ) -> Result<(), CliError> {
        view.apply(record).map_err(|e| corrupt(id, &e))?;
        reporter.record(view, record);
        Ok(())
    }
}

fn corrupt(id: &JobId, e: &orchestrator_core::journal::ReplayError) -> CliError {
    CliError::Store(StoreError::Corrupt {
        job: Some(id.clone()),
        key: "journal".into(),
        message: e.to_string(),
    })
}
