package main

import (
	"fmt"
	"strconv"
	"strings"
)

// Subject templates: --subject may hold placeholders, expanded for each message. The
// names are emqtt-bench's where it has one.
//
//	%i  the client's number, from 1 to --clients (emqtt-bench: the client sequence number)
//	%c  the client's MQTT client id (emqtt-bench: the client id)
//	%n  the message's number within its client, from 1: the sequence number of --payload-header
//	%s  the same as %n (emqtt-bench's name for the message sequence number)
//	%%  a percent sign
//
// A template is parsed once into parts; each client expands %i and %c once, so that a
// subject without %n is one string for all of a client's messages and one with %n costs
// one string of the subject's length per message, no formatting.
const templateHelp = "%i client number, %c client id, %n or %s message number, %% a percent sign"

// placeholder kinds of a template part.
const (
	phNone   = 0
	phClient = 'i'
	phID     = 'c'
	phSeq    = 'n'
)

// subjectTemplate is a parsed --subject.
type subjectTemplate struct {
	raw   string
	parts []tplPart // literals merged, never two literals in a row
}

type tplPart struct {
	lit string // when ph is phNone
	ph  byte
}

// parseTemplate parses s; an unknown placeholder or a lone % at the end is an error.
func parseTemplate(s string) (subjectTemplate, error) {
	t := subjectTemplate{raw: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, tplPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return t, fmt.Errorf("a lone %% ends it (%%%% is a percent sign; placeholders: %s)", templateHelp)
		}
		i++
		switch s[i] {
		case '%':
			lit.WriteByte('%')
		case 'i', 'c', 'n', 's':
			flush()
			ph := s[i]
			if ph == 's' {
				ph = phSeq
			}
			t.parts = append(t.parts, tplPart{ph: ph})
		default:
			return t, fmt.Errorf("unknown placeholder %%%c (placeholders: %s)", s[i], templateHelp)
		}
	}
	flush()
	return t, nil
}

// has reports whether the template uses the placeholder ph.
func (t *subjectTemplate) has(ph byte) bool {
	for _, p := range t.parts {
		if p.ph == ph {
			return true
		}
	}
	return false
}

// forClient expands the client's placeholders: client is its number, id its client id.
func (t *subjectTemplate) forClient(client int, id string) clientSubject {
	var cs clientSubject
	var b strings.Builder
	for _, p := range t.parts {
		switch p.ph {
		case phNone:
			b.WriteString(p.lit)
		case phClient:
			b.WriteString(strconv.Itoa(client))
		case phID:
			b.WriteString(id)
		case phSeq:
			cs.segs = append(cs.segs, b.String())
			b.Reset()
		}
	}
	if cs.segs == nil {
		cs.fixed = b.String()
	} else {
		cs.segs = append(cs.segs, b.String())
	}
	return cs
}

// clientSubject is a template with one client's placeholders expanded.
type clientSubject struct {
	fixed string   // the subject of every message, when the template has no %n
	segs  []string // else the text around each %n: len(segs) = number of %n + 1
}

// subject returns the subject of message seq; buf is scratch space, kept between calls.
func (cs *clientSubject) subject(buf *[]byte, seq uint64) string {
	if cs.segs == nil {
		return cs.fixed
	}
	b := append((*buf)[:0], cs.segs[0]...)
	for _, s := range cs.segs[1:] {
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, s...)
	}
	*buf = b
	return string(b)
}

// filter returns a topic filter that matches every subject the template makes: each
// level holding a placeholder becomes "+".
func (t *subjectTemplate) filter() string {
	levels := strings.Split(t.raw, "/")
	for i, l := range levels {
		if strings.Contains(strings.ReplaceAll(l, "%%", ""), "%") {
			levels[i] = "+"
		} else {
			levels[i] = strings.ReplaceAll(l, "%%", "%")
		}
	}
	return strings.Join(levels, "/")
}

// longest returns the longest subject the template makes for clients clients whose ids
// are at most idLen bytes long: a message number takes at most 20 digits.
func (t *subjectTemplate) longest(clients, idLen int) string {
	var b strings.Builder
	for _, p := range t.parts {
		switch p.ph {
		case phNone:
			b.WriteString(p.lit)
		case phClient:
			b.WriteString(strings.Repeat("9", len(strconv.Itoa(clients))))
		case phID:
			b.WriteString(strings.Repeat("x", idLen))
		case phSeq:
			b.WriteString(strings.Repeat("9", 20))
		}
	}
	return b.String()
}
