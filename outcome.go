package mdclient

import (
	"context"
	"errors"
	"fmt"

	"github.com/mdclient/mdclient/engine"
)

// result turns what became of a request into its result: the one place where the
// engine's facts become statuses and errors. The rule of the contract: FAILED means not
// published, TIMEOUT means unknown — so every fact but an acknowledgement reads as
// TIMEOUT for a message whose bytes were handed to a connection.
func (c *Client) result(r *request) PublishResult {
	o := &r.Outcome
	res := PublishResult{Closure: r.closure, Server: o.Server}
	switch {
	case o.Fact == engine.Acked:
		res.Status, res.Err = ackStatus(o.Reason, o.ReasonString, &c.opts.deniedReasonCode)
		if o.Resent && (res.Status == NotifyPublishFailed || res.Status == NotifyPublishDenied) {
			// The refusal is of the last send; an earlier one may have been published.
			res.Status, res.Err = NotifyPublishTimeout, refusedResendErr(o.Reason, o.ReasonString)
		}
	case o.Written:
		res.Status, res.Err = NotifyPublishTimeout, timeoutErr(o)
	case o.Fact == engine.Refused:
		res.Status, res.Err, res.Server = NotifyPublishDenied, fmt.Errorf("%w: %w", ErrDenied, o.Cause), ""
	default:
		res.Status, res.Err, res.Server = NotifyPublishFailed, failedErr(o), ""
	}
	return res
}

// The errors of the commonest results, built once, so that a request ended by its context
// or by Close costs no allocation: [no connection][cause] with the causes of causeIndex.
var (
	errFailedTimeout [2][3]error
	errTimeoutCause  [3]error
	errFailedClosed  = fmt.Errorf("%w: %w", ErrFailed, ErrClosed)
	errTimeoutClosed = fmt.Errorf("%w: %w", ErrTimeout, ErrClosed)
)

func init() {
	for k, cause := range [3]error{nil, context.DeadlineExceeded, context.Canceled} {
		errFailedTimeout[0][k], errFailedTimeout[1][k] = fmt.Errorf("%w: %w", ErrFailed, ErrTimeout), fmt.Errorf("%w: %w: %w", ErrFailed, ErrTimeout, ErrNoServers)
		errTimeoutCause[k] = ErrTimeout
		if cause != nil {
			errFailedTimeout[0][k] = fmt.Errorf("%w: %w: %w", ErrFailed, ErrTimeout, cause)
			errFailedTimeout[1][k] = fmt.Errorf("%w: %w: %w: %w", ErrFailed, ErrTimeout, ErrNoServers, cause)
			errTimeoutCause[k] = fmt.Errorf("%w: %w", ErrTimeout, cause)
		}
	}
}

// causeIndex is the index of a context's cause in the prebuilt errors, or -1.
func causeIndex(err error) int {
	switch err {
	case nil:
		return 0
	case context.DeadlineExceeded:
		return 1
	case context.Canceled:
		return 2
	}
	return -1
}

// timeoutErr is the error of a TIMEOUT: ErrTimeout and what ended the request.
func timeoutErr(o *engine.Outcome) error {
	switch o.Fact {
	case engine.Expired:
		if k := causeIndex(o.Cause); k >= 0 {
			return errTimeoutCause[k]
		}
	case engine.Closed:
		return errTimeoutClosed
	}
	return fmt.Errorf("%w: %w", ErrTimeout, cause(o))
}

// failedErr is the error of a FAILED: ErrFailed and why the message was not published.
func failedErr(o *engine.Outcome) error {
	switch o.Fact {
	case engine.Expired: // never written: the context (or the publish timeout) ended first
		conn := 0
		if o.NoConnection {
			conn = 1
		}
		if k := causeIndex(o.Cause); k >= 0 {
			return errFailedTimeout[conn][k]
		}
		if o.NoConnection {
			return fmt.Errorf("%w: %w: %w: %w", ErrFailed, ErrTimeout, ErrNoServers, o.Cause)
		}
		return fmt.Errorf("%w: %w: %w", ErrFailed, ErrTimeout, o.Cause)
	case engine.Closed:
		return errFailedClosed
	}
	return fmt.Errorf("%w: %w", ErrFailed, cause(o))
}

// cause is what a fact other than Acked adds to the result's sentinel; nil for a
// context that ended without a cause of its own (the publish timeout).
func cause(o *engine.Outcome) error {
	switch o.Fact {
	case engine.Closed:
		return ErrClosed
	case engine.NoServers:
		return ErrNoServers
	case engine.TooLarge:
		return wrapOnce(ErrMessageTooLarge, o.Cause)
	case engine.Invalid:
		if errors.Is(o.Cause, ErrHookPanicked) {
			return o.Cause
		}
		return wrapOnce(ErrInvalidMessage, o.Cause)
	case engine.Lost:
		return fmt.Errorf("connection lost before the acknowledgement: %w", o.Cause)
	}
	return o.Cause // Expired (with a cause of its own), Refused, Poisoned
}

// wrapOnce wraps cause in sentinel unless it wraps it already.
func wrapOnce(sentinel, cause error) error {
	if errors.Is(cause, sentinel) {
		return cause
	}
	return fmt.Errorf("%w: %w", sentinel, cause)
}

// refusedResendErr is the error of a message refused after it was sent again: TIMEOUT,
// the refusal in words only, so that it matches neither ErrFailed nor ErrDenied, which
// say the message was not published.
func refusedResendErr(code byte, reason string) error {
	if reason != "" {
		reason = " (" + reason + ")"
	}
	return fmt.Errorf("%w: sent again after its connection was lost, it was refused with reason code 0x%02x%s; the earlier send may have been published", ErrTimeout, code, reason)
}

// ackStatus maps a PUBACK reason code: below 0x80 success (0x10: no subscriber), 0x87 and
// the codes of WithDeniedReasonCodes denied, any other failure code failed.
func ackStatus(code byte, reason string, denied *[256]bool) (Status, error) {
	switch {
	case code == 0x10:
		return NotifyPublishNoSubscriber, ackErr(ackNoSubscriber, code, reason)
	case code < 0x80:
		return NotifyPublishOK, nil
	case code == 0x87 || denied[code]:
		return NotifyPublishDenied, ackErr(ackDenied, code, reason)
	}
	return NotifyPublishFailed, ackErr(ackFailed, code, reason)
}

// The sentinels of the acknowledgements that carry an error.
const (
	ackNoSubscriber = iota
	ackDenied
	ackFailed
)

// ackErrs are the errors of acknowledgements without a reason string, one per sentinel
// and reason code: a broker answers "no subscriber" to most publishes of a stream that
// nobody reads yet, and each such result would otherwise allocate its error.
var ackErrs [3][256]ackError

func init() {
	for k, sentinel := range [3]error{ErrNoSubscriber, ErrDenied, ErrFailed} {
		for code := range 256 {
			ackErrs[k][code] = ackError{sentinel, byte(code)}
		}
	}
}

// ackError is an acknowledgement's error: its sentinel and reason code.
type ackError struct {
	sentinel error
	code     byte
}

func (e *ackError) Error() string {
	return fmt.Sprintf("%v: reason code 0x%02x", e.sentinel, e.code)
}

func (e *ackError) Unwrap() error { return e.sentinel }

// ackErr is the error of an acknowledgement that has one.
func ackErr(k int, code byte, reason string) error {
	if reason == "" {
		return &ackErrs[k][code]
	}
	return fmt.Errorf("%w: reason code 0x%02x (%s)", ackErrs[k][code].sentinel, code, reason)
}
