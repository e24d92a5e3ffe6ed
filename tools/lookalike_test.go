package tools

import (
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Latin look-alikes are single-script, so the mixed-script rule never sees
// them: the UTS #39 skeleton does.
func testLatinLookalike(t *testing.T, in, imitates string, chars ...string) {
	t.Helper()
	for _, form := range []string{in, mustPunycode(t, in)} {
		d, err := NormalizeDomain(form)
		if err == nil {
			t.Fatalf("NormalizeDomain(%q) = %+v: a look-alike of %s was accepted", form, d, imitates)
		}
		msg := err.Error()
		if !IsInputError(err) || !strings.Contains(msg, "imitates the ASCII name "+`"`+imitates+`"`) {
			t.Fatalf("NormalizeDomain(%q): %v; want it to name %q", form, err, imitates)
		}
		for _, c := range chars {
			if !strings.Contains(msg, c) {
				t.Errorf("NormalizeDomain(%q) error %q does not name %s", form, msg, c)
			}
		}
	}
}

func mustPunycode(t *testing.T, s string) string {
	t.Helper()
	a, err := idna.Punycode.ToASCII(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAttackLatinLookalikeScriptG(t *testing.T) {
	t.Parallel()
	testLatinLookalike(t, "ɡoogle.com", "google", `U+0261 LATIN SMALL LETTER SCRIPT G (ɡ) looks like "g"`)
}

func TestAttackLatinLookalikeSmallCapitalG(t *testing.T) {
	t.Parallel()
	testLatinLookalike(t, "ɢoogle.com", "google", `U+0262 LATIN LETTER SMALL CAPITAL G (ɢ) looks like "g"`)
}

func TestAttackLatinLookalikeDotlessI(t *testing.T) {
	t.Parallel()
	testLatinLookalike(t, "gıthub.com", "github", `U+0131 LATIN SMALL LETTER DOTLESS I (ı) looks like "i"`)
}

func TestAttackLatinLookalikeDotlessIAtTheEnd(t *testing.T) {
	t.Parallel()
	testLatinLookalike(t, "paypaı.com", "paypai", `U+0131 LATIN SMALL LETTER DOTLESS I (ı) looks like "i"`)
}

func TestAttackLatinLookalikeSmallCapitalS(t *testing.T) {
	t.Parallel()
	testLatinLookalike(t, "ꜱcope.com", "scope", `U+A731 LATIN LETTER SMALL CAPITAL S (ꜱ) looks like "s"`)
}

func TestAttackLatinLookalikeSeveralCharacters(t *testing.T) {
	t.Parallel()
	testLatinLookalike(t, "ɡıtʜub.dev", "github", "U+0261", "U+0131", "U+029C LATIN LETTER SMALL CAPITAL H")
}

func TestAttackLookalikeFakeDot(t *testing.T) {
	t.Parallel()
	// LISU LETTER TONE MYA TI looks like a full stop: "googleꓸcom" reads as a
	// name of its own. Mixing scripts already refuses it; the skeleton agrees.
	if _, err := NormalizeDomain("googleꓸcom.dev"); err == nil || !strings.Contains(err.Error(), "look-alike") {
		t.Fatalf("a fake dot passed: %v", err)
	}
	if err := asciiLookalike("googleꓸcom"); err == nil || !strings.Contains(err.Error(), `imitates the ASCII name "google.com"`) {
		t.Fatalf("skeleton of a fake dot: %v", err)
	}
}

// Internationalised names that look like nothing in ASCII stay registrable.
func TestLegitimateIDNsAccepted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, fqdn string }{
		{"bücher.dev", "xn--bcher-kva.dev"},
		{"münchen.de", "xn--mnchen-3ya.de"},
		{"café.com", "xn--caf-dma.com"},
		{"straße.de", "xn--strae-oqa.de"},
		{"日本語.jp", "xn--wgv71a119e.jp"},
		{"ελληνικά.gr", "xn--hxargifdar.gr"},
		{"пример.рф", "xn--e1afmkfd.xn--p1ai"},
		{"blåbær.no", "xn--blbr-roah.no"},
	} {
		d, err := NormalizeDomain(tc.in)
		if err != nil {
			t.Errorf("NormalizeDomain(%q): %v", tc.in, err)
			continue
		}
		if d.FQDN != tc.fqdn {
			t.Errorf("NormalizeDomain(%q) = %q, want %q", tc.in, d.FQDN, tc.fqdn)
		}
		if want := tc.fqdn + " (contains non-ASCII letters: " + tc.in + ")"; d.Display() != want {
			t.Errorf("Display() = %q, want %q", d.Display(), want)
		}
	}
	if d, _ := NormalizeDomain("example.dev"); d.Display() != "example.dev" {
		t.Errorf("an ASCII name displays as %q", d.Display())
	}
}

// TestConfusablesData pins the Unicode data the table was generated from
// (internal/confusablesgen) and that the table is what the check relies on.
func TestConfusablesData(t *testing.T) {
	t.Parallel()
	if confusablesVersion != "16.0.0" || confusablesDate != "2024-08-14, 23:39:57 GMT" ||
		confusablesSHA256 != "95bd0aad6dced5ebc63436f459c06ab21a8d107cd842fb57f5c3a1e91bca8611" {
		t.Fatalf("confusables data %s (%s, %s): regenerate with internal/confusablesgen and update this pin together", confusablesVersion, confusablesDate, confusablesSHA256)
	}
	for i, c := range confusableRows {
		if i > 0 && confusableRows[i-1].r >= c.r {
			t.Fatalf("rows not sorted at U+%04X", c.r)
		}
		if c.r < utf8.RuneSelf || c.to == "" || !isASCIIString(c.to) || c.name == "" {
			t.Fatalf("bad row %+v", c)
		}
	}
	for r, want := range map[rune]string{0x0261: "g", 0x0131: "i", 0xA731: "s", 0x0430: "a", 0x0440: "p", 0x0262: "g", 0x029C: "h"} {
		if c, ok := confusableOf(r); !ok || c.to != want {
			t.Errorf("U+%04X maps to %+v, want %q", r, c, want)
		}
	}
	for _, r := range []rune{'ü', 'ß', 'λ', '日', 0x0308} {
		if c, ok := confusableOf(r); ok {
			t.Errorf("U+%04X has a row %+v: names with it would be refused", r, c)
		}
	}
}

// skeletonIsASCII is the rule asciiLookalike enforces, computed directly.
func skeletonIsASCII(label string) bool {
	for _, r := range norm.NFD.String(label) {
		if r >= utf8.RuneSelf {
			if _, ok := confusableOf(r); !ok {
				return false
			}
		}
	}
	return true
}
