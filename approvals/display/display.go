// Package display makes text that someone else controls safe to show to a
// human: an agent's reason, an MCP client's name and version, script and
// domain names, idempotency keys, deny reasons typed into Slack, error text
// from an upstream API. Such text can try to forge what a reader sees: a
// newline and "*Quoted cost (max)*" in a client name draws a second, bold cost
// line in a Slack message; U+202E turns "exe.txt" into "txt.exe"; zero-width
// characters hide words from a reader but not from a filter; an ESC sequence
// repaints a terminal.
//
// Every function here first cleans the text (Clean): invalid UTF-8 becomes
// U+FFFD; line breaks and tabs become spaces; control characters, bidi
// embeddings, overrides, isolates and marks, zero-width and other
// default-ignorable characters (variation selectors, tags, Hangul fillers) are
// removed; runs of more than MaxMarks combining marks are cut. It then caps
// the length in characters without splitting a character from its combining
// marks, ending with Ellipsis when it cut. The result is one line that shows
// exactly the visible characters it holds.
//
// Which function to use depends on where the text goes:
//
//   - Text: plain text (Slack plain_text objects and notification text,
//     terminals, CLI tables, logs read by people).
//   - Code: a value inside Slack mrkdwn, as inline code, so it cannot open
//     bold, italics, a heading, a link or a mention.
//   - CodeBlock: several lines inside Slack mrkdwn as a code block (source
//     code shown for review): only line breaks survive, each line is cleaned.
//   - Mrkdwn: prose tollgate or its configuration wrote (policy reasons,
//     budget names) inside mrkdwn; it escapes Slack's control characters but
//     keeps *bold*, so never give it text an agent controls.
//
// The package imports nothing from tollgate, so every channel (Slack, the CLI,
// the web console) can use it.
package display

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Ellipsis ends text that was cut to fit.
const Ellipsis = "…"

// MaxMarks is how many combining marks may follow one another; more are
// dropped, so stacked marks ("Zalgo" text) cannot spill over the lines
// around them. Real scripts stack at most three or four.
const MaxMarks = 4

// backtickStandIn replaces a backtick inside Slack code, where a backtick
// would end the code span: U+02CB MODIFIER LETTER GRAVE ACCENT looks alike
// and means nothing to mrkdwn.
const backtickStandIn = 'ˋ'

// Forbidden reports whether r is never shown: control characters (C0, DEL,
// C1), line and paragraph separators, format characters (bidi embeddings,
// overrides, isolates and marks, zero-width space, joiners, word joiner,
// BOM, soft hyphen, tags, interlinear annotation) and the other
// default-ignorable code points (variation selectors, Hangul fillers,
// combining grapheme joiner, the reserved default-ignorable ranges).
func Forbidden(r rune) bool {
	if r < 0x80 {
		return r < 0x20 || r == 0x7f
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp,
		unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)
}

// lineBreak reports whether r ends a line (or is a tab): such runes become a
// space in one-line text and a line break in a code block.
func lineBreak(r rune) bool {
	switch r {
	case '\n', '\r', '\v', '\f', '\u0085', '\u2028', '\u2029':
		return true
	}
	return false
}

// mark reports whether r attaches to the character before it: combining
// marks and emoji skin-tone modifiers. A cut never separates them from it.
func mark(r rune) bool {
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc) || (r >= 0x1f3fb && r <= 0x1f3ff)
}

// Clean returns s as one line of visible text: see the package comment.
// It does not cap the length. Clean(Clean(s)) == Clean(s).
func Clean(s string) string {
	return clean(s, false)
}

// clean drops forbidden runes and caps runs of combining marks. Line breaks
// become '\n' when multiline is set, a space otherwise; tabs become a space.
func clean(s string, multiline bool) string {
	var b strings.Builder
	b.Grow(len(s))
	marks := 0
	// Ranging over s turns each invalid byte into U+FFFD.
	for i, r := range s {
		switch {
		case r == '\r' && multiline && i+1 < len(s) && s[i+1] == '\n':
			continue
		case lineBreak(r) && multiline:
			r = '\n'
		case lineBreak(r) || r == '\t':
			r = ' '
		case Forbidden(r):
			continue
		}
		if mark(r) {
			if marks++; marks > MaxMarks {
				continue
			}
		} else {
			marks = 0
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Text returns s cleaned and cut to at most max characters: plain text for
// Slack plain_text objects and notifications, terminals and CLI tables.
// Text(Text(s, max), max) == Text(s, max).
func Text(s string, max int) string {
	return fit(Clean(s), max, nil)
}

// Code returns s as Slack mrkdwn inline code of at most max characters,
// backticks included: cleaned to one line, its backticks replaced by a
// look-alike that cannot end the span, and &, < and > escaped so no
// mention, link or date can be formed. Inside the span mrkdwn applies no
// bold, italics or strike-through. An empty value reads "(none)".
func Code(s string, max int) string {
	s = strings.ReplaceAll(Clean(s), "`", string(backtickStandIn))
	if s == "" {
		return "(none)"
	}
	if max < 3 {
		return ""
	}
	return "`" + fit(s, max-2, escapeMrkdwn) + "`"
}

// CodeBlock returns s as a Slack mrkdwn code block of at most max
// characters, fences included. It keeps line breaks (source code is read by
// line) and cleans each line like Code; only line breaks between lines
// remain, tabs become spaces.
func CodeBlock(s string, max int) string {
	s = strings.ReplaceAll(clean(s, true), "`", string(backtickStandIn))
	if strings.TrimSpace(s) == "" {
		s = " "
	}
	if max < 7 {
		return ""
	}
	return "```" + fit(s, max-6, escapeMrkdwn) + "```"
}

// Mrkdwn returns s cleaned, with &, < and > escaped and backticks replaced
// (no code span or fence can open), cut to at most max characters, for prose
// inside Slack mrkdwn. It leaves *bold* and _italics_ working, so it is only
// for text tollgate or its configuration wrote (policy reasons, budget names,
// amounts); text an agent or a client controls goes through Code.
func Mrkdwn(s string, max int) string {
	return fit(strings.ReplaceAll(Clean(s), "`", string(backtickStandIn)), max, escapeMrkdwn)
}

// escapeMrkdwn returns r as mrkdwn text: Slack reads &, < and > as markup
// (mentions, links, dates), so they are always written as entities.
func escapeMrkdwn(r rune) string {
	switch r {
	case '&':
		return "&amp;"
	case '<':
		return "&lt;"
	case '>':
		return "&gt;"
	}
	return ""
}

// fit returns s, each rune written through escape (when it returns a
// non-empty string), within max characters of output. When it does not fit,
// it is cut before a whole character (a rune with its marks, never half an
// entity or half a flag) and ends with Ellipsis.
func fit(s string, max int, escape func(rune) string) string {
	if max <= 0 {
		return ""
	}
	width := func(r rune) int {
		if escape != nil {
			if e := escape(r); e != "" {
				return len(e) // entities are ASCII
			}
		}
		return 1
	}
	total := 0
	for _, r := range s {
		total += width(r)
	}
	var b strings.Builder
	if total <= max {
		b.Grow(len(s) + total - utf8.RuneCountInString(s))
		writeEscaped(&b, s, escape)
		return b.String()
	}
	// The longest prefix that leaves room for the ellipsis.
	end, n := 0, 0
	for i, r := range s {
		w := width(r)
		if n+w > max-1 {
			break
		}
		n += w
		end = i + utf8.RuneLen(r)
	}
	end = clusterStart(s, end)
	writeEscaped(&b, s[:end], escape)
	b.WriteString(Ellipsis)
	return b.String()
}

// clusterStart moves a cut at byte end back until it does not separate a
// character from its marks, nor the two halves of a flag.
func clusterStart(s string, end int) int {
	for end > 0 && end < len(s) {
		r, _ := utf8.DecodeRuneInString(s[end:])
		if !mark(r) {
			break
		}
		_, size := utf8.DecodeLastRuneInString(s[:end])
		end -= size
	}
	// Regional indicators pair into flags: never leave an odd one behind.
	n, i := 0, end
	for i > 0 {
		r, size := utf8.DecodeLastRuneInString(s[:i])
		if r < 0x1f1e6 || r > 0x1f1ff {
			break
		}
		n++
		i -= size
	}
	if n%2 == 1 {
		_, size := utf8.DecodeLastRuneInString(s[:end])
		end -= size
	}
	return end
}

func writeEscaped(b *strings.Builder, s string, escape func(rune) string) {
	if escape == nil {
		b.WriteString(s)
		return
	}
	for _, r := range s {
		if e := escape(r); e != "" {
			b.WriteString(e)
		} else {
			b.WriteRune(r)
		}
	}
}

// Duration renders d for people, to the minute or second that matters:
// "3d", "2h05m", "29m" or "40s" (a negative d as its size).
func Duration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
}
