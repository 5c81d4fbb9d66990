package mdclient

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/mdclient/mdclient/engine"
)

// A Hook observes every request that PublishAsync (and so Publish) accepts, for tracing
// and metrics. It is called on the caller's goroutine, with the caller's context, after
// the request passed the client's checks and before it is queued. It may replace
// m.UserProperties with a new slice, to carry a W3C traceparent say, but must never
// modify the caller's slice in place; the new properties are checked like the caller's,
// and a message they make invalid gets NotifyPublishFailed wrapping ErrInvalidMessage.
//
// The function it returns, when not nil, is called exactly once with the request's
// result, before the result is delivered: on a client goroutine, or on the caller's when
// the client refuses the request after the hook ran (a full queue, a client closing). It
// must not block: results wait for it.
//
// A hook or done function that panics is a bug of its author: the client recovers, logs
// the panic with its stack at level Error, and goes on; a request whose hook panicked gets
// NotifyPublishFailed wrapping ErrHookPanicked, and every other request its own result.
type Hook func(ctx context.Context, m *Message) (done func(PublishResult))

// WithHook sets the client's Hook; several WithHook options chain, in order, each seeing
// the message as the ones before it left it. Without one, a request costs nothing more.
func WithHook(h Hook) Option {
	return func(o *options) {
		if h == nil {
			return
		}
		if prev := o.hook; prev != nil {
			o.hook = chainHooks(prev, h)
			return
		}
		o.hook = h
	}
}

// chainHooks runs a then b; their done functions run in the reverse order, like defers.
func chainHooks(a, b Hook) Hook {
	return func(ctx context.Context, m *Message) func(PublishResult) {
		da := a(ctx, m)
		db := b(ctx, m)
		switch {
		case da == nil:
			return db
		case db == nil:
			return da
		}
		return func(r PublishResult) {
			db(r)
			da(r)
		}
	}
}

// runHook calls the hook for m; it reports a panic as an error, logged.
func (c *Client) runHook(ctx context.Context, m *Message) (done func(PublishResult), err error) {
	defer func() {
		if p := recover(); p != nil {
			c.opts.logger.Error("mdclient: hook panicked", "panic", p, "stack", string(debug.Stack()))
			done, err = nil, fmt.Errorf("%w: %v", ErrHookPanicked, p)
		}
	}()
	return c.opts.hook(ctx, m), nil
}

// hookDone calls a request's done function, recovering a panic so that the results
// delivered with it are not lost.
func (c *Client) hookDone(done func(PublishResult), res PublishResult) {
	defer func() {
		if p := recover(); p != nil {
			c.opts.logger.Error("mdclient: hook's done function panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	done(res)
}

// hook runs the client's hook on an accepted request; it reports false, the request
// refused, if the hook panicked or left the message invalid. It takes the message by
// value: the hook's pointer makes it escape, and a client without a hook must not pay
// that allocation.
func (c *Client) hook(ctx context.Context, req *request, msg Message) bool {
	m := &msg
	props := m.UserProperties
	done, err := c.runHook(ctx, m)
	req.done = done
	if err != nil {
		c.refuse(req, engine.Invalid, err)
		return false
	}
	if !sameProps(props, m.UserProperties) {
		if fact, cause := req.fill(m); cause != nil {
			c.refuse(req, fact, cause)
			return false
		}
	}
	return true
}

// sameProps reports whether a and b are the same slice.
func sameProps(a, b []UserProperty) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
