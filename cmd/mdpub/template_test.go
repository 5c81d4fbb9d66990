package main

import (
	"strings"
	"testing"

	"github.com/mdclient/mdclient/codec"
)

func TestTemplateExpansion(t *testing.T) {
	cases := []struct {
		tpl, want, filter string
		seq               uint64
	}{
		{"mdpub/stream", "mdpub/stream", "mdpub/stream", 7},
		{"load/%i", "load/3", "load/+", 7},
		{"load/%i/%n", "load/3/7", "load/+/+", 7},
		{"load/%s", "load/42", "load/+", 42}, // emqtt-bench's name for the message number
		{"%c/x", "mdpub-0a1b2c3d-3/x", "+/x", 1},
		{"a%ib%nc%n", "a3b12c12", "+", 12},
		{"100%%/%i", "100%/3", "100%/+", 1},
		{"x/%%i", "x/%i", "x/%i", 1}, // an escaped percent sign is no placeholder
		{"%n", "18446744073709551615", "+", 1<<64 - 1},
	}
	for _, tc := range cases {
		tpl, err := parseTemplate(tc.tpl)
		if err != nil {
			t.Fatalf("%q: %v", tc.tpl, err)
		}
		cs := tpl.forClient(3, "mdpub-0a1b2c3d-3")
		var buf []byte
		if got := cs.subject(&buf, tc.seq); got != tc.want {
			t.Errorf("%q, client 3, message %d: %q, want %q", tc.tpl, tc.seq, got, tc.want)
		}
		if got := tpl.filter(); got != tc.filter {
			t.Errorf("%q: filter %q, want %q", tc.tpl, got, tc.filter)
		}
		if err := codec.CheckTopicName(cs.subject(&buf, tc.seq)); err != nil {
			t.Errorf("%q: subject: %v", tc.tpl, err)
		}
		if l := tpl.longest(9, len("mdpub-0a1b2c3d-3")); len(l) < len(tc.want) {
			t.Errorf("%q: longest %q is shorter than %q", tc.tpl, l, tc.want)
		}
	}
	for _, bad := range []string{"a/%", "a/%x", "%d", "%rand_5"} {
		if _, err := parseTemplate(bad); err == nil || !strings.Contains(err.Error(), "%") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}

// TestTemplateCostsAtMostOneStringPerMessage: a subject without %n is one string for all
// of a client's messages; one with %n is one allocation, its own string, and no
// formatting.
func TestTemplateCostsAtMostOneStringPerMessage(t *testing.T) {
	for tplText, want := range map[string]float64{"load/%i/%c": 0, "load/%i/%n": 1, "%n/%n/x": 1} {
		tpl, err := parseTemplate(tplText)
		if err != nil {
			t.Fatal(err)
		}
		cs := tpl.forClient(12, "mdpub-00000000-12")
		var buf []byte
		seq := uint64(0)
		if n := testing.AllocsPerRun(1000, func() { seq++; _ = cs.subject(&buf, seq) }); n != want {
			t.Errorf("%q: %v allocations per message, want %v", tplText, n, want)
		}
	}
}

func BenchmarkTemplateSubject(b *testing.B) {
	tpl, _ := parseTemplate("load/%i/%n")
	cs := tpl.forClient(12, "mdpub-00000000-12")
	var buf []byte
	b.ReportAllocs()
	for i := uint64(0); b.Loop(); i++ {
		_ = cs.subject(&buf, i)
	}
}
