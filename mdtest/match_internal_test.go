package mdtest

import "testing"

func TestMatchTopic(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true}, // an empty level is a level
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"+/+", "/a", true},
		{"+", "a", true},
		{"+", "/a", false},
		{"a/#", "a", true}, // "#" includes the parent level
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"a/+/#", "a/b", true},
		{"#", "a/b", true},
		{"#", "/", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"$SYS/+/uptime", "$SYS/broker/uptime", true},
		{"A/b", "a/b", false}, // case-sensitive
	}
	for _, tc := range tests {
		if got := matchTopic(tc.filter, tc.topic); got != tc.want {
			t.Errorf("matchTopic(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestValidateFilter(t *testing.T) {
	valid := []string{"a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "$SYS/#", "a//b"}
	for _, f := range valid {
		if err := validateFilter(f); err != nil {
			t.Errorf("validateFilter(%q) = %v, want nil", f, err)
		}
	}
	invalid := []string{"", "#/a", "a/#/b", "a#", "a/b+", "+a", "$share/g/a", "a\x00", "\xff"}
	for _, f := range invalid {
		if err := validateFilter(f); err == nil {
			t.Errorf("validateFilter(%q) = nil, want an error", f)
		}
	}
}
