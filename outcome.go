package mdclient

import (
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
	case o.Written:
		res.Status, res.Err = NotifyPublishTimeout, ErrTimeout
		if why := cause(o); why != nil {
			res.Err = fmt.Errorf("%w: %w", ErrTimeout, why)
		}
	case o.Fact == engine.Refused:
		res.Status, res.Err, res.Server = NotifyPublishDenied, fmt.Errorf("%w: %w", ErrDenied, o.Cause), ""
	case o.Fact == engine.Expired:
		// Never written: its context (or the publish timeout) ended first.
		err := fmt.Errorf("%w: %w", ErrFailed, ErrTimeout)
		if o.NoConnection {
			err = fmt.Errorf("%w: %w", err, ErrNoServers)
		}
		if o.Cause != nil {
			err = fmt.Errorf("%w: %w", err, o.Cause)
		}
		res.Status, res.Err, res.Server = NotifyPublishFailed, err, ""
	default:
		res.Status, res.Err, res.Server = NotifyPublishFailed, fmt.Errorf("%w: %w", ErrFailed, cause(o)), ""
	}
	return res
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
		return wrapOnce(ErrInvalidMessage, o.Cause)
	case engine.Lost:
		return fmt.Errorf("connection lost before the acknowledgement: %w", o.Cause)
	}
	return o.Cause // Expired, Refused, Poisoned
}

// wrapOnce wraps cause in sentinel unless it wraps it already.
func wrapOnce(sentinel, cause error) error {
	if errors.Is(cause, sentinel) {
		return cause
	}
	return fmt.Errorf("%w: %w", sentinel, cause)
}

// ackStatus maps a PUBACK reason code: below 0x80 success (0x10: no subscriber), 0x87 and
// the codes of WithDeniedReasonCodes denied, any other failure code failed.
func ackStatus(code byte, reason string, denied *[256]bool) (Status, error) {
	why := func(sentinel error) error {
		if reason == "" {
			return fmt.Errorf("%w: reason code 0x%02x", sentinel, code)
		}
		return fmt.Errorf("%w: reason code 0x%02x (%s)", sentinel, code, reason)
	}
	switch {
	case code == 0x10:
		return NotifyPublishNoSubscriber, why(ErrNoSubscriber)
	case code < 0x80:
		return NotifyPublishOK, nil
	case code == 0x87 || denied[code]:
		return NotifyPublishDenied, why(ErrDenied)
	}
	return NotifyPublishFailed, why(ErrFailed)
}
