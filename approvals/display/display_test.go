package display

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "Claude Code 1.2.3", 100, "Claude Code 1.2.3"},
		{"newlines become spaces", "a\nb\r\nc\rd", 100, "a b  c d"},
		{"unicode line separators", "a\u2028b\u2029c\u0085d", 100, "a b c d"},
		{"tab", "a\tb", 100, "a b"},
		{"C0 and DEL removed", "a\x00b\x07c\x1b[31md\x7f", 100, "abc[31md"},
		{"C1 removed", "a\u009b31mb\u0080", 100, "a31mb"},
		{"bidi overrides removed", "\u202Egnp.exe\u202C", 100, "gnp.exe"},
		{"bidi isolates removed", "a\u2066b\u2067c\u2068d\u2069e", 100, "abcde"},
		{"bidi marks removed", "a\u200eb\u200fc\u061cd", 100, "abcd"},
		{"zero-width removed", "a\u200bb\u200cc\u200dd\u2060e\ufeff", 100, "abcde"},
		{"soft hyphen, tags, variation selector removed", "pay\u00adpal\U000E0041\U000E007F\ufe0f", 100, "paypal"},
		{"hangul filler removed", "a\u3164b\u115fc", 100, "abc"},
		{"invalid UTF-8", "a\xffb", 100, "a\uFFFDb"},
		{"zalgo capped", "a\u0301\u0302\u0303\u0304\u0305\u0306b", 100, "a\u0301\u0302\u0303\u0304b"},
		{"zalgo across a removed rune", "a\u0301\u0302\u0303\u200b\u0304\u0305", 100, "a\u0301\u0302\u0303\u0304"},
		{"fits exactly", "hello", 5, "hello"},
		{"cut with ellipsis", "hello!", 5, "hell…"},
		{"cut counts runes", "ééééé", 3, "éé…"},
		{"cut keeps marks with their letter", "ae\u0301\u0302x", 3, "a…"},
		{"cut never splits a flag", "a\U0001F1E9\U0001F1EA\U0001F1EB\U0001F1F7", 3, "a…"},
		{"flag kept whole", "\U0001F1E9\U0001F1EAxyz", 3, "\U0001F1E9\U0001F1EA…"},
		{"zero max", "abc", 0, ""},
		{"one max", "abc", 1, "…"},
		{"markup is kept as text", "*bold* <!channel>", 100, "*bold* <!channel>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Text(tt.in, tt.max); got != tt.want {
				t.Fatalf("Text(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

func TestCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "web-bot", 100, "`web-bot`"},
		{"empty", "", 100, "(none)"},
		{"only invisible", "\u200b\u202e", 100, "(none)"},
		{"mention escaped", "<!channel>", 100, "`&lt;!channel&gt;`"},
		{"link escaped", "<https://x|y>", 100, "`&lt;https://x|y&gt;`"},
		{"ampersand", "a&b", 100, "`a&amp;b`"},
		{"backticks cannot close the span", "a`b``c", 100, "`aˋbˋˋc`"},
		{"forged line", "Claude Code\n\n*Quoted cost (max)*\n0.01 USD", 100, "`Claude Code  *Quoted cost (max)* 0.01 USD`"},
		{"never half an entity", "ab<cd", 7, "`ab…`"},
		{"cap includes the fences", "abcdefgh", 6, "`abc…`"},
		{"too small", "abc", 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Code(tt.in, tt.max); got != tt.want {
				t.Fatalf("Code(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

func TestCodeBlock(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"keeps lines and indentation", "export default {\n  fetch() {}\r\n}", 100, "```export default {\n  fetch() {}\n}```"},
		{"fence cannot be closed", "x```\n<!here>", 100, "```xˋˋˋ\n&lt;!here&gt;```"},
		{"bidi in source removed", "if (a \u202e) {", 100, "```if (a ) {```"},
		{"blank", "\u200b", 100, "``` ```"},
		{"cut", strings.Repeat("a", 20), 12, "```aaaaa…```"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := CodeBlock(tt.in, tt.max); got != tt.want {
				t.Fatalf("CodeBlock(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

func TestMrkdwn(t *testing.T) {
	t.Parallel()
	if got, want := Mrkdwn("budget <team:web> & co\nnext", 100), "budget &lt;team:web&gt; &amp; co next"; got != want {
		t.Fatalf("Mrkdwn = %q, want %q", got, want)
	}
	if got, want := Mrkdwn("see ```x", 100), "see ˋˋˋx"; got != want {
		t.Fatalf("Mrkdwn = %q, want %q", got, want)
	}
	if got, want := Mrkdwn("<<<", 9), "&lt;&lt;…"; got != want {
		t.Fatalf("Mrkdwn = %q, want %q", got, want)
	}
}

func TestForbidden(t *testing.T) {
	t.Parallel()
	for _, r := range []rune{0, '\n', '\r', '\t', 0x1b, 0x7f, 0x85, 0x9b, 0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x061c,
		0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x2028, 0x2029, 0x2060, 0xfeff,
		0x00ad, 0x180e, 0x034f, 0x3164, 0xffa0, 0xfe0f, 0xe0001, 0xe0041, 0xe0100, 0xfff9} {
		if !Forbidden(r) {
			t.Errorf("U+%04X is shown", r)
		}
	}
	for _, r := range []rune{'a', ' ', '*', '<', 'é', 'ß', '日', 0x0301, 0x2705, 0x00a0, 0xfffd} {
		if Forbidden(r) {
			t.Errorf("U+%04X is removed", r)
		}
	}
}

// FuzzSanitise: whatever goes in, what comes out of Text has no forbidden
// rune, no line break, is valid UTF-8, fits its cap and does not change when
// sanitised again; Code, CodeBlock and Mrkdwn keep their caps and never let
// markup or a fence through.
func FuzzSanitise(f *testing.F) {
	for _, s := range []string{
		"", "Claude Code\n\n*Quoted cost (max)*\n0.01 USD ✅ pre-approved", "\u202Egnp.exe", "a\u200bb", "<!channel>",
		"<https://x|y>", "x`````y`", "\xff\xfe", strings.Repeat("é\u0301", 300), "\U0001F1E9\U0001F1EA\U0001F1EB",
		"a\u0301\u0302\u0303\u0304\u0305\u200b\u0306", "\r\n\u2028\u0085", "&amp;<>", "\U000E0041\ufe0f\u3164",
	} {
		f.Add(s, 40)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max%5000 + 10
		if max < 10 {
			max += 5000
		}
		got := Text(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("Text(%q) = %q is not valid UTF-8", s, got)
		}
		if n := utf8.RuneCountInString(got); n > max {
			t.Fatalf("Text(%q, %d) has %d characters", s, max, n)
		}
		for _, r := range got {
			if Forbidden(r) || lineBreak(r) || r == '\t' {
				t.Fatalf("Text(%q) = %q keeps U+%04X", s, got, r)
			}
		}
		if again := Text(got, max); again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, got, again)
		}
		if c := Clean(s); Clean(c) != c {
			t.Fatalf("Clean not idempotent on %q", s)
		}
		for name, out := range map[string]string{"Code": Code(s, max), "CodeBlock": CodeBlock(s, max), "Mrkdwn": Mrkdwn(s, max)} {
			if n := utf8.RuneCountInString(out); n > max && out != "(none)" {
				t.Fatalf("%s(%q, %d) has %d characters", name, s, max, n)
			}
			if strings.ContainsAny(out, "<>") || (name != "CodeBlock" && strings.Contains(out, "``")) {
				t.Fatalf("%s(%q) = %q carries raw markup", name, s, out)
			}
			for _, r := range out {
				if Forbidden(r) && r != '\n' {
					t.Fatalf("%s(%q) keeps U+%04X", name, s, r)
				}
			}
		}
		if code := Code(s, max); code != "(none)" && (strings.Count(code, "`") != 2 || strings.Contains(code, "\n")) {
			t.Fatalf("Code(%q) = %q can leave its span", s, code)
		}
		if block := CodeBlock(s, max); strings.Count(block, "`") != 6 || !strings.HasPrefix(block, "```") || !strings.HasSuffix(block, "```") {
			t.Fatalf("CodeBlock(%q) = %q can leave its fence", s, block)
		}
	})
}

func TestDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		40 * time.Second: "40s", 29*time.Minute + 59*time.Second: "29m", 2*time.Hour + 5*time.Minute: "2h05m",
		-90 * time.Second: "1m", 49 * time.Hour: "2d", 0: "0s",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}
