//go:build unix

package mosquittotest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// record renders m the way mosquitto_sub prints it with subFormat.
func record(m Msg) []byte {
	var b bytes.Buffer
	retain := 0
	if m.Retain {
		retain = 1
	}
	fmt.Fprintf(&b, "\x00%s\x00%d\x00%d\x00%d\x00%s\x00%s\x00%x\x00", recordMarker,
		retain, m.QoS, len(m.Payload), m.Topic, m.ResponseTopic, m.Payload)
	b.Write(m.CorrelationData)
	b.WriteByte(0)
	b.Write(m.CorrelationData)
	b.WriteString(recordEnd)
	return b.Bytes()
}

func parseAll(t *testing.T, data []byte) ([]string, []Msg, error) {
	t.Helper()
	var lines []string
	var msgs []Msg
	err := parseOutput(bufio.NewReader(bytes.NewReader(data)),
		func(l string) { lines = append(lines, l) },
		func(m Msg) bool { msgs = append(msgs, m); return true })
	return lines, msgs, err
}

func TestParseOutput(t *testing.T) {
	want := []Msg{
		{Topic: "a/b", Payload: []byte("hi"), QoS: 1},
		{Topic: "t\nwith newline", Payload: []byte{0, '\n', 0xff}, ResponseTopic: "r/t", Retain: true,
			CorrelationData: []byte("x\x00mosquittotest-end\ny"), QoS: 1},
		{Topic: "c", Payload: []byte{}, CorrelationData: []byte("\x00\x00"), QoS: 0},
		{Topic: "d", Payload: []byte(recordEnd), CorrelationData: []byte(recordEnd + "\x00" + recordEnd)},
	}
	var in bytes.Buffer
	in.WriteString("Client (null) sending CONNECT\nSubscribed (mid: 1): 1\n")
	for i, m := range want {
		fmt.Fprintf(&in, "Client x received PUBLISH (d0, q1, r0, m%d, '%s', ... (2 bytes))\n", i, m.Topic)
		in.Write(record(m))
	}
	in.WriteString("Client x sending DISCONNECT") // no final newline

	lines, got, err := parseAll(t, in.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("messages:\n got %+v\nwant %+v", got, want)
	}
	if lines[1] != "Subscribed (mid: 1): 1" || lines[len(lines)-1] != "Client x sending DISCONNECT" {
		t.Errorf("lines: %q", lines)
	}
}

func TestParseOutputRandomCorrelationData(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("\x00\nmosquittotest-end")
	for i := range 2000 {
		cd := make([]byte, 1+r.IntN(40))
		for j := range cd {
			cd[j] = alphabet[r.IntN(len(alphabet))]
		}
		m := Msg{Topic: "t", Payload: []byte{byte(i)}, CorrelationData: cd}
		data := append(record(m), record(Msg{Topic: "next", Payload: []byte{}})...)
		_, got, err := parseAll(t, data)
		if err != nil || len(got) != 2 || !bytes.Equal(got[0].CorrelationData, cd) || got[1].Topic != "next" {
			t.Fatalf("correlation data %q: got %+v, %v", cd, got, err)
		}
	}
}

func TestParseOutputErrors(t *testing.T) {
	good := record(Msg{Topic: "a", Payload: []byte("xy")})
	for name, data := range map[string][]byte{
		"truncated fields": good[:10],
		"truncated corr":   good[:len(good)-3],
		"bad marker":       bytes.Replace(good, []byte(recordMarker), []byte("other"), 1),
		"bad length":       bytes.Replace(good, []byte("\x002\x00"), []byte("\x003\x00"), 1),
		"bad retain":       bytes.Replace(good, []byte(recordMarker+"\x000"), []byte(recordMarker+"\x007"), 1),
	} {
		_, _, err := parseAll(t, data)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if strings.HasPrefix(name, "truncated") && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: %v, want unexpected EOF", name, err)
		}
	}
}

func TestParseSubscribed(t *testing.T) {
	for in, want := range map[string][]int{
		"Subscribed (mid: 1): 1":       {1},
		"Subscribed (mid: 12): 0, 135": {0, 135},
	} {
		if got, ok := parseSubscribed(in); !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("parseSubscribed(%q) = %v, %v", in, got, ok)
		}
	}
	for _, in := range []string{"Client x received SUBACK", "Subscribed (mid: 1): x", "Subscribed (mid: 1)"} {
		if _, ok := parseSubscribed(in); ok {
			t.Errorf("parseSubscribed(%q) succeeded", in)
		}
	}
}
