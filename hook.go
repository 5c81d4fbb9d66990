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
// Changes to the other fields are not taken: m is the client's copy.
//
// The function it returns, when not nil, is called exactly once with the request's
// result, before the result is delivered: on a client goroutine, or on the caller's when
// the client refuses the request after the hook ran (a full queue, a client closing). It
// must not block: it runs on the client's engine goroutine, so while it blocks nothing is
// written or acknowledged for any request, and Close waits for it — so it must not call
// Close either, which would wait for it for ever. It may publish again (a retry), and
// while Close runs that call does not wait for Close; but with WithMaxQueued requests
// already queued it waits for room like any call, holding up the engine until its
// context ends — give it a short one, or publish from a goroutine. Hand slow work
// (exporting, say) to a goroutine or a batching processor of your own.
//
// A hook or done function that panics is a bug of its author: the client recovers, logs
// the panic with its stack at level Error, and goes on; a request whose hook panicked gets
// NotifyPublishFailed wrapping ErrHookPanicked, and every other request its own result.
type Hook func(ctx context.Context, m *Message) (done func(PublishResult))

// WithHook adds a Hook to the client. Several run in the order given, each seeing the
// message as the ones before it left it; their done functions run in the reverse order,
// like defers, each once, also when a later hook panicked. Without a hook, a request
// costs nothing more.
func WithHook(h Hook) Option {
	return func(o *options) {
		if h != nil {
			o.hooks = append(o.hooks, h)
		}
	}
}

// hook runs the client's hooks on an accepted request; it reports false, the request
// refused, if a hook panicked or left the message invalid. Only the user properties are
// taken from what the hooks leave: the request was filled from the message already. The
// hooks see the request's own copy of the message, so that a client without hooks never
// makes the caller's escape to the heap.
func (c *Client) hook(ctx context.Context, req *request, msg *Message) bool {
	req.msg = *msg
	m := &req.msg
	props := m.UserProperties
	err := c.runHooks(ctx, req, m)
	if err == nil && !sameProps(props, m.UserProperties) {
		var fact engine.Fact
		if fact, err = checkProperties(m.UserProperties); err == nil {
			req.Packet.UserProperties = m.UserProperties
		} else {
			c.refuse(req, fact, err)
			return false
		}
	}
	req.msg = Message{} // only the properties are needed from here on, in the packet
	if err != nil {
		c.refuse(req, engine.Invalid, err)
		return false
	}
	return true
}

// runHooks calls each hook in turn and sets req.done to call their done functions; it
// stops at a hook that panics, and returns an error saying so.
func (c *Client) runHooks(ctx context.Context, req *request, m *Message) error {
	hooks := c.opts.hooks
	if len(hooks) == 1 {
		done, err := c.runHook(hooks[0], ctx, m)
		req.done = done
		return err
	}
	var dones []func(PublishResult)
	var err error
	for _, h := range hooks {
		var done func(PublishResult)
		if done, err = c.runHook(h, ctx, m); done != nil {
			dones = append(dones, done)
		}
		if err != nil {
			break
		}
	}
	switch len(dones) {
	case 0:
	case 1:
		req.done = dones[0]
	default:
		req.done = func(r PublishResult) {
			for i := len(dones) - 1; i >= 0; i-- {
				c.hookDone(dones[i], r)
			}
		}
	}
	return err
}

// runHook calls h for m; it reports a panic as an error, logged.
func (c *Client) runHook(h Hook, ctx context.Context, m *Message) (done func(PublishResult), err error) {
	defer func() {
		if p := recover(); p != nil {
			c.opts.logger.Error("mdclient: hook panicked", "panic", p, "stack", string(debug.Stack()))
			done, err = nil, fmt.Errorf("%w: %v", ErrHookPanicked, p)
		}
	}()
	return h(ctx, m), nil
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

// sameProps reports whether a and b are the same slice.
func sameProps(a, b []UserProperty) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
