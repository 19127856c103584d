//! What becomes of a record, decided as a plain value before anything is written.
//!
//! The lane ([`super::lane`]) gathers facts (the record decoded or not, what the
//! worker knows about the command, how its handler ran) and asks this module for a
//! [`Disposition`]; [`super::emit`] then turns the disposition into records. Keeping
//! the decision pure is what lets the whole table below be tested without Kafka.
//!
//! | facts                                              | disposition                  |
//! |----------------------------------------------------|------------------------------|
//! | record over `--max-message-bytes`, or undecodable  | dead letter (decode reason)  |
//! | a final event exists and it is not a DLQ replay    | duplicate                    |
//! | no handler for its type                            | dead letter `unknown_type`   |
//! | a cancel was seen before it ran                    | final `cancelled`            |
//! | its deadline passed before pickup                  | final `timed_out`            |
//! | the partition stopped while it ran, not completed  | abandoned                    |
//! | the handler returned a value                       | final `completed`            |
//! | the payload does not decode as the handler's input | dead letter `schema_violation` |
//! | retryable error, attempts left                     | retry                        |
//! | retryable error, last attempt                      | dead letter `retries_exhausted` |
//! | permanent error                                    | final `failed`               |
//! | the handler panicked                               | dead letter `handler_panic`  |
//! | the deadline passed while it ran                   | final `timed_out`            |
//! | a cancel arrived while it ran                      | final `cancelled`            |
//! | the handler took it over (`202`)                   | deferred: hand-off recorded  |
//! | it (this attempt) was handed off already           | stale: its lane stays parked |
//!
//! A completion record (a handed-off command's outcome, from the gateway or the
//! partition owner's lease check, [`completion`]):
//!
//! | facts                                              | disposition                  |
//! |----------------------------------------------------|------------------------------|
//! | the command has a final event                      | duplicate                    |
//! | not the attempt handed off (or none was)           | stale                        |
//! | `completed`                                        | final `completed`            |
//! | `failed`, retryable, attempts left                 | retry                        |
//! | `failed`, retryable, last attempt                  | dead letter `retries_exhausted` |
//! | `failed`, `cancelled`, `timed_out`                 | final, with its error        |

use serde_json::Value;

use crate::envelope::{Completion, DecodeError, ErrorInfo, Reason, State, Timing};
use crate::router::{HandlerError, RouteError};

/// The fate of one record, before any of it is written.
#[derive(Debug, PartialEq)]
pub(crate) enum Disposition {
    /// The command already has a final event (seen on the results topic): nothing
    /// is written, the record is finished.
    Duplicate,
    /// The command ended: its final event, snapshot and reply copy are written.
    Final(Final),
    /// A retryable failure with attempts left: the record goes to the next retry tier
    /// and its lane waits for it.
    Retry(HandlerError),
    /// The record goes to the DLQ, followed by a `failed` event when its id is known.
    DeadLetter(Letter),
    /// The partition is going away: nothing is written, and the next owner runs the
    /// record again.
    Abandoned,
    /// The handler took the command over (deferred completion): a `started` event,
    /// a snapshot and a deferral record are written, the record is finished and its
    /// lane waits for the command's completion.
    Deferred,
    /// A record for a command whose current attempt is handed off (a redelivered
    /// command, an old attempt's completion): nothing is written and its lane goes
    /// back to waiting as it was.
    Stale,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Final {
    pub state: State,
    pub result: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub timing: Timing,
}

impl Final {
    pub fn completed(result: Value, timing: Timing) -> Self {
        Final { state: State::Completed, result: Some(result), error: None, timing }
    }

    pub fn error(state: State, code: &str, message: &str, timing: Timing) -> Self {
        let error = ErrorInfo { code: code.into(), message: message.into(), retryable: false };
        Final { state, result: None, error: Some(error), timing }
    }
}

/// Why a record is dead-lettered, and the error its `failed` event carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Letter {
    pub reason: Reason,
    pub message: String,
    /// The `failed` event's error when it is not simply the reason and message (the
    /// handler's last error, for `retries_exhausted`).
    pub error: Option<ErrorInfo>,
}

impl Letter {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Letter { reason, message: message.into(), error: None }
    }

    /// The error in the `failed` event that follows the letter.
    pub fn failed_error(&self) -> ErrorInfo {
        self.error.clone().unwrap_or_else(|| ErrorInfo { code: self.reason.as_str().into(), message: self.message.clone(), retryable: false })
    }
}

impl From<Letter> for Disposition {
    fn from(letter: Letter) -> Self {
        Disposition::DeadLetter(letter)
    }
}

/// A record that is not a command Courier can run.
pub(crate) fn unreadable(error: &DecodeError) -> Disposition {
    Letter::new(error.reason(), error.to_string()).into()
}

/// What the worker knows about a decoded command before its handler runs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Known {
    /// A final event for its id exists (its own, or seen on the results topic).
    pub finished: bool,
    /// The record was sent back from the DLQ by an operator: it runs again anyway.
    pub replayed: bool,
    /// A cancel for it was seen on the control topic.
    pub cancelled: bool,
    /// Its deadline is already past.
    pub past_deadline: bool,
    /// This attempt (or a later one) was handed off to its handler already.
    pub handed_off: bool,
}

/// Whether the command may run (with `route`, its handler, when one is registered);
/// `Err` is what happens to it instead.
pub(crate) fn before_run<R>(command_type: &str, route: Option<R>, known: Known, timing: Timing) -> Result<R, Disposition> {
    if known.finished && !known.replayed {
        return Err(Disposition::Duplicate);
    }
    if known.handed_off && !known.replayed {
        return Err(Disposition::Stale);
    }
    let Some(route) = route else {
        return Err(Letter::new(Reason::UnknownType, format!("no handler for command type {command_type:?}")).into());
    };
    if known.cancelled {
        return Err(Disposition::Final(Final::error(State::Cancelled, "cancelled", "cancelled before it ran", timing)));
    }
    if known.past_deadline {
        return Err(Disposition::Final(Final::error(State::TimedOut, "deadline_exceeded", "deadline passed before pickup", timing)));
    }
    Ok(route)
}

/// How a handler's run ended, as the core saw it.
#[derive(Debug)]
pub(crate) enum Ran {
    /// It returned (through any layers around it).
    Returned(Result<Value, RouteError>),
    /// It panicked; the text of the panic.
    Panicked(String),
    /// Still running at the command's deadline.
    DeadlinePassed,
    /// Still running when a cancel arrived.
    Cancelled,
    /// Still running when the partition was revoked or the worker stopped.
    Stopped,
}

/// The rest of the command's life after its handler ran. `stopped`: the partition
/// was stopping by then; `attempt` of `max_attempts`.
pub(crate) fn after_run(ran: Ran, stopped: bool, attempt: u32, max_attempts: u32, timing: Timing) -> Disposition {
    if stopped && !matches!(ran, Ran::Returned(Ok(_))) {
        // A handler that failed now most likely did so because its token fired with
        // the stop, not because the command failed: the next owner runs it again.
        return Disposition::Abandoned;
    }
    match ran {
        Ran::Returned(Ok(value)) => Disposition::Final(Final::completed(value, timing)),
        Ran::Returned(Err(RouteError::HandedOff(_))) => Disposition::Deferred,
        Ran::Returned(Err(RouteError::InvalidInput(message))) => Letter::new(Reason::SchemaViolation, message).into(),
        Ran::Returned(Err(RouteError::Handler(e))) if e.retryable && attempt >= max_attempts => Letter {
            reason: Reason::RetriesExhausted,
            message: format!("gave up after {attempt} attempts: {}", e.message),
            error: Some(e.into_info()),
        }
        .into(),
        Ran::Returned(Err(RouteError::Handler(e))) if e.retryable => Disposition::Retry(e),
        Ran::Returned(Err(RouteError::Handler(e))) => {
            Disposition::Final(Final { state: State::Failed, result: None, error: Some(e.into_info()), timing })
        }
        Ran::Panicked(text) => Letter::new(Reason::HandlerPanic, format!("handler panicked: {text}")).into(),
        Ran::DeadlinePassed => {
            Disposition::Final(Final::error(State::TimedOut, "deadline_exceeded", "handler was still running at the deadline", timing))
        }
        Ran::Cancelled => Disposition::Final(Final::error(State::Cancelled, "cancelled", "cancelled while running", timing)),
        Ran::Stopped => Disposition::Abandoned,
    }
}

/// What a completion record does to its command: `finished`, it has a final event;
/// `handed_off`, the attempt the completion names is the one handed off.
pub(crate) fn completion(done: &Completion, finished: bool, handed_off: bool, max_attempts: u32, timing: Timing) -> Disposition {
    if finished {
        return Disposition::Duplicate;
    }
    if !handed_off {
        return Disposition::Stale;
    }
    let attempt = done.deferral.attempt;
    let error = || done.error.clone().unwrap_or_else(|| ErrorInfo { code: done.state.as_str().into(), message: "ended by its handler".into(), retryable: false });
    match done.state {
        State::Completed => Disposition::Final(Final::completed(done.result.clone().unwrap_or(Value::Null), timing)),
        State::Failed if error().retryable => {
            let e = error();
            after_run(Ran::Returned(Err(RouteError::Handler(HandlerError::retryable(e.code, e.message)))), false, attempt, max_attempts, timing)
        }
        state => Disposition::Final(Final { state, result: None, error: Some(ErrorInfo { retryable: false, ..error() }), timing }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: Timing = Timing { queued_ms: 0, execution_ms: 0, attempts: 1 };
    fn reason(d: Disposition) -> Reason {
        match d {
            Disposition::DeadLetter(l) => l.reason,
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    fn state(d: Result<(), Disposition>) -> State {
        match d {
            Err(Disposition::Final(f)) => f.state,
            other => panic!("expected a final event, got {other:?}"),
        }
    }

    #[test]
    fn undecodable_records_are_dead_letters_with_their_reason() {
        assert_eq!(reason(unreadable(&DecodeError::NotJson("x".into()))), Reason::NotJson);
        assert_eq!(reason(unreadable(&DecodeError::TooLarge { size: 2, limit: 1 })), Reason::TooLarge);
        assert_eq!(reason(unreadable(&DecodeError::NotUtf8Header("ce_type"))), Reason::BadHeader);
    }

    #[test]
    fn a_runnable_command_runs() {
        assert_eq!(before_run("echo", Some(()), Known::default(), T), Ok(()));
    }

    #[test]
    fn admission_order_duplicate_then_type_then_cancel_then_deadline() {
        let all = Known { finished: true, replayed: false, cancelled: true, past_deadline: true, handed_off: true };
        assert_eq!(before_run("x", None::<()>, all, T), Err(Disposition::Duplicate));
        let replayed = Known { replayed: true, ..all };
        assert_eq!(reason(before_run("x", None::<()>, replayed, T).unwrap_err()), Reason::UnknownType, "a replay runs again");
        assert_eq!(state(before_run("x", Some(()), replayed, T)), State::Cancelled);
        let live = Known { cancelled: false, ..replayed };
        assert_eq!(state(before_run("x", Some(()), live, T)), State::TimedOut);
    }

    #[test]
    fn a_command_already_handed_off_is_stale_and_a_202_hands_off() {
        let handed = Known { handed_off: true, ..Known::default() };
        assert_eq!(before_run("x", Some(()), handed, T), Err(Disposition::Stale));
        assert_eq!(before_run("x", Some(()), Known { finished: true, ..handed }, T), Err(Disposition::Duplicate));
        assert_eq!(after_run(Ran::Returned(Err(RouteError::HandedOff(crate::router::HandedOff))), false, 1, 3, T), Disposition::Deferred);
        assert_eq!(after_run(Ran::Returned(Err(RouteError::HandedOff(crate::router::HandedOff))), true, 1, 3, T), Disposition::Abandoned);
    }

    #[test]
    fn completions_end_the_handed_off_attempt_once() {
        let mut c = crate::envelope::NewCommand::new("job", json!(null)).into_command("//t");
        c.attempt = 2;
        let d = crate::envelope::Deferral::of(&c, json!(null), 0, None);
        let at = chrono::Utc::now();
        let done = |state, result, error| Completion { deferral: d.clone(), state, result, error, at };
        let ok = done(State::Completed, Some(json!({"n": 1})), None);
        assert_eq!(completion(&ok, false, true, 3, T), Disposition::Final(Final::completed(json!({"n": 1}), T)));
        assert_eq!(completion(&ok, true, true, 3, T), Disposition::Duplicate);
        assert_eq!(completion(&ok, false, false, 3, T), Disposition::Stale);
        let err = |retryable| Some(ErrorInfo { code: "gpu_oom".into(), message: "oom".into(), retryable });
        assert!(matches!(completion(&done(State::Failed, None, err(true)), false, true, 3, T), Disposition::Retry(e) if e.code == "gpu_oom"));
        assert_eq!(reason(completion(&done(State::Failed, None, err(true)), false, true, 2, T)), Reason::RetriesExhausted);
        assert_eq!(state(Err(completion(&done(State::Failed, None, err(false)), false, true, 3, T))), State::Failed);
        assert_eq!(state(Err(completion(&done(State::TimedOut, None, None), false, true, 3, T))), State::TimedOut);
        assert_eq!(state(Err(completion(&done(State::Cancelled, None, err(true)), false, true, 3, T))), State::Cancelled);
    }

    #[test]
    fn handler_results() {
        let ok = after_run(Ran::Returned(Ok(json!(1))), false, 1, 3, T);
        assert_eq!(ok, Disposition::Final(Final::completed(json!(1), T)));
        let bad = after_run(Ran::Returned(Err(RouteError::InvalidInput("missing field".into()))), false, 1, 3, T);
        assert_eq!(reason(bad), Reason::SchemaViolation);
        let failed = after_run(Ran::Returned(Err(RouteError::Handler(HandlerError::permanent("bad_width", "no")))), false, 1, 3, T);
        match failed {
            Disposition::Final(f) => assert_eq!((f.state, f.error.unwrap().code.as_str()), (State::Failed, "bad_width")),
            other => panic!("{other:?}"),
        }
        assert_eq!(reason(after_run(Ran::Panicked("boom".into()), false, 1, 3, T)), Reason::HandlerPanic);
    }

    #[test]
    fn retryable_errors_retry_until_the_last_attempt() {
        let e = || Ran::Returned(Err(RouteError::Handler(HandlerError::retryable("flaky", "try later"))));
        assert!(matches!(after_run(e(), false, 2, 3, T), Disposition::Retry(_)));
        match after_run(e(), false, 3, 3, T) {
            Disposition::DeadLetter(l) => {
                assert_eq!(l.reason, Reason::RetriesExhausted);
                assert_eq!(l.failed_error().code, "flaky", "the failed event carries the handler's last error");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deadline_and_cancel_while_running_are_final() {
        assert_eq!(state(Err(after_run(Ran::DeadlinePassed, false, 1, 3, T))), State::TimedOut);
        assert_eq!(state(Err(after_run(Ran::Cancelled, false, 1, 3, T))), State::Cancelled);
    }

    #[test]
    fn a_stop_abandons_everything_but_a_completed_result() {
        for ran in [
            Ran::Stopped,
            Ran::Cancelled,
            Ran::DeadlinePassed,
            Ran::Panicked("x".into()),
            Ran::Returned(Err(RouteError::Handler(HandlerError::permanent("cancelled", "token fired")))),
        ] {
            assert_eq!(after_run(ran, true, 1, 3, T), Disposition::Abandoned);
        }
        assert!(matches!(after_run(Ran::Returned(Ok(json!(null))), true, 1, 3, T), Disposition::Final(_)));
        assert_eq!(after_run(Ran::Stopped, false, 1, 3, T), Disposition::Abandoned);
    }

    #[test]
    fn a_letter_s_failed_event_defaults_to_its_reason() {
        let l = Letter::new(Reason::UnknownType, "no handler");
        assert_eq!(l.failed_error(), ErrorInfo { code: "unknown_type".into(), message: "no handler".into(), retryable: false });
    }
}
