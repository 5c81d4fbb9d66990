package mdclient

import (
	"errors"

	"github.com/mdclient/mdclient/cluster"
)

// The sentinel errors. A PublishResult's Err, Publish's error and SetServers' error wrap
// one or more of them; test with errors.Is. Every result with status NotifyPublishFailed
// wraps ErrFailed, and what made it fail besides.
var (
	// ErrDenied: the server refused the publish (PUBACK 0x87), or every server refused the
	// entitlement token at CONNECT. Status NotifyPublishDenied.
	ErrDenied = errors.New("mdclient: publish denied")
	// ErrNoSubscriber: the server had no subscriber for the subject (PUBACK 0x10).
	// Status NotifyPublishNoSubscriber.
	ErrNoSubscriber = errors.New("mdclient: no subscriber")
	// ErrTimeout: the request's context or the publish timeout ended first. With status
	// NotifyPublishTimeout the message was written and may have been published; with
	// NotifyPublishFailed it was never written.
	ErrTimeout = errors.New("mdclient: publish timed out")
	// ErrFailed: the publish failed; the error also says why. Status NotifyPublishFailed.
	ErrFailed = errors.New("mdclient: publish failed")
	// ErrClosed: the client was closed before the outcome was known.
	ErrClosed = errors.New("mdclient: client closed")
	// ErrNoServers: no server list was set, or no server was connected when the request
	// expired.
	ErrNoServers = errors.New("mdclient: no servers available")
	// ErrInvalidMessage: the message can never be sent (an empty subject, one with '+',
	// '#' or NUL, invalid UTF-8, an unknown QoS); nothing was written.
	ErrInvalidMessage = errors.New("mdclient: invalid message")
	// ErrMessageTooLarge: the message exceeds the server's Maximum Packet Size (or MQTT's
	// limit); nothing was written.
	ErrMessageTooLarge = errors.New("mdclient: message too large")
	// ErrInvalidServer: an entry given to SetServers does not parse; the error names it.
	ErrInvalidServer = cluster.ErrInvalidServer
)
