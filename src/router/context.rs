//! [`Context`]: what a running handler knows about its command, and how it talks back.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::{Command, Progress};

/// Sends progress events on behalf of a running handler (the worker's publisher).
pub(crate) type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Everything a handler may want to know about the command it runs, and its two ways
/// to talk back while running: the cancellation token (listen) and progress (speak).
///
/// The worker builds one per run. To unit-test a handler without Kafka, build one
/// with [`Context::for_test`] and read back what it reported with
/// [`Context::progress_reports`].
#[derive(Clone)]
pub struct Context {
    /// The command's id, the same on every attempt: the key to dedupe side effects on.
    pub command_id: Uuid,
    /// The command type this handler was routed by.
    pub command_type: String,
    /// The command's key as sent: any bytes (`std::str::from_utf8` for a text key).
    pub key: Option<Vec<u8>>,
    /// 1 on the first run, then counting retries: a handler may change course on a
    /// later attempt (a fallback, a smaller batch).
    pub attempt: u32,
    /// When the caller stops caring: the worker ends the run as `timed_out` then.
    pub deadline: Option<DateTime<Utc>>,
    /// The command's `ce_source`: who sent it.
    pub source: String,
    /// When the command was sent (`ce_time`), if the producer said.
    pub time: Option<DateTime<Utc>>,
    /// The command's W3C trace context, to continue the caller's trace downstream.
    pub traceparent: Option<String>,
    /// Fires when the deadline passes, the command is cancelled, or the worker must
    /// give the partition up. A handler doing long work should select on it.
    pub cancel: CancellationToken,
    progress: Reports,
}

/// Where progress reports go: published by a worker, kept by a test context.
#[derive(Clone)]
enum Reports {
    Publish(ProgressSink),
    Keep(Arc<Mutex<Vec<Progress>>>),
}

impl Context {
    /// The worker's context for one run of a command.
    pub(crate) fn new(command: &Command, cancel: CancellationToken, progress: ProgressSink) -> Self {
        Context {
            command_id: command.id,
            command_type: command.command_type.clone(),
            key: command.key.clone(),
            attempt: command.attempt,
            deadline: command.deadline,
            source: command.source.clone(),
            time: command.time,
            traceparent: command.traceparent.clone(),
            cancel,
            progress: Reports::Publish(progress),
        }
    }

    /// A context for testing a handler without a worker: a fresh id, no key, attempt
    /// 1, no deadline, a token nothing fires (cancel it yourself to test how the
    /// handler stops), and progress reports kept for [`Context::progress_reports`].
    ///
    /// ```
    /// # use courier::Context;
    /// let ctx = Context::for_test("image.resize").with_key("user-7").with_attempt(2);
    /// ctx.progress(50.0, Some("halfway".to_string()));
    /// assert_eq!(ctx.progress_reports()[0].percent, 50.0);
    /// assert_eq!(ctx.key.as_deref(), Some(&b"user-7"[..]));
    /// ```
    pub fn for_test(command_type: impl Into<String>) -> Self {
        Context {
            command_id: Uuid::now_v7(),
            command_type: command_type.into(),
            key: None,
            attempt: 1,
            deadline: None,
            source: "test".into(),
            time: Some(Utc::now()),
            traceparent: None,
            cancel: CancellationToken::new(),
            progress: Reports::Keep(Arc::default()),
        }
    }

    /// The same context with this key: for handlers that act on the key (a tenant, an
    /// entity id).
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same context on this attempt: for handlers that behave differently on a retry.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same context with this deadline: for handlers that budget their work by it.
    /// Only the field is set; nothing fires the token when it passes (the worker does).
    pub fn with_deadline(mut self, deadline: DateTime<Utc>) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Publishes a `progress` event (fire-and-forget: progress is advisory).
    pub fn progress(&self, percent: f32, message: impl Into<Option<String>>) {
        let report = Progress { percent: percent.clamp(0.0, 100.0), message: message.into() };
        match &self.progress {
            Reports::Publish(sink) => sink(report),
            Reports::Keep(kept) => kept.lock().unwrap_or_else(PoisonError::into_inner).push(report),
        }
    }

    /// What the handler reported through this context (or any clone of it), in
    /// order, as the events would carry it (percent clamped to 0..=100). Only a
    /// [`Context::for_test`] keeps reports; a worker's context publishes them, so this
    /// is empty there.
    pub fn progress_reports(&self) -> Vec<Progress> {
        match &self.progress {
            Reports::Publish(_) => Vec::new(),
            Reports::Keep(kept) => kept.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    /// Whether the token has fired: for a handler that checks between steps rather
    /// than selecting on [`Context::cancel`].
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_context_keeps_reports_from_every_clone_in_order() {
        let ctx = Context::for_test("t");
        let clone = ctx.clone();
        ctx.progress(10.0, None);
        clone.progress(250.0, Some("over".to_string()));
        let reports = ctx.progress_reports();
        assert_eq!(reports, vec![
            Progress { percent: 10.0, message: None },
            Progress { percent: 100.0, message: Some("over".into()) },
        ]);
    }

    #[test]
    fn a_worker_context_publishes_reports_and_keeps_none() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink: ProgressSink = {
            let sent = sent.clone();
            Arc::new(move |p| sent.lock().unwrap().push(p))
        };
        let command = crate::envelope::NewCommand::new("t", serde_json::Value::Null).into_command("test");
        let ctx = Context::new(&command, CancellationToken::new(), sink);
        ctx.progress(-5.0, None);
        assert!(ctx.progress_reports().is_empty());
        assert_eq!(sent.lock().unwrap()[0].percent, 0.0);
    }

    #[test]
    fn setters_fill_the_fields_a_worker_would() {
        let at = Utc::now();
        let ctx = Context::for_test("t").with_key(vec![0xff, 0]).with_attempt(3).with_deadline(at);
        assert!(!ctx.is_cancelled());
        assert_eq!((ctx.key, ctx.attempt, ctx.deadline), (Some(vec![0xff, 0]), 3, Some(at)));
    }
}
