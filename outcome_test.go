package mdclient

import (
	"errors"
	"testing"
)

// An acknowledgement's error names its sentinel and reason code (and the reason string
// when the server sent one), and without a reason string costs no allocation: against a
// broker without subscribers every result of a stream carries one.
func TestAckErrors(t *testing.T) {
	var denied [256]bool
	denied[0x97] = true
	for _, c := range []struct {
		code     byte
		reason   string
		status   Status
		sentinel error
		text     string
	}{
		{0x00, "", NotifyPublishOK, nil, ""},
		{0x10, "", NotifyPublishNoSubscriber, ErrNoSubscriber, "mdclient: no subscriber: reason code 0x10"},
		{0x87, "", NotifyPublishDenied, ErrDenied, "mdclient: publish denied: reason code 0x87"},
		{0x97, "", NotifyPublishDenied, ErrDenied, "mdclient: publish denied: reason code 0x97"},
		{0x80, "", NotifyPublishFailed, ErrFailed, "mdclient: publish failed: reason code 0x80"},
		{0x90, "bad topic", NotifyPublishFailed, ErrFailed, "mdclient: publish failed: reason code 0x90 (bad topic)"},
		{0x10, "nobody", NotifyPublishNoSubscriber, ErrNoSubscriber, "mdclient: no subscriber: reason code 0x10 (nobody)"},
	} {
		status, err := ackStatus(c.code, c.reason, &denied)
		switch {
		case status != c.status:
			t.Errorf("0x%02x: %v, want %v", c.code, status, c.status)
		case c.sentinel == nil && err != nil:
			t.Errorf("0x%02x: %v, want no error", c.code, err)
		case c.sentinel != nil && (!errors.Is(err, c.sentinel) || err.Error() != c.text):
			t.Errorf("0x%02x %q: %v, want %q wrapping %v", c.code, c.reason, err, c.text, c.sentinel)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ackStatus(0x10, "", &denied) }); n != 0 {
		t.Errorf("%v allocations per no-subscriber result, want 0", n)
	}
}
