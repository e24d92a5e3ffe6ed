package tools

import (
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

func TestNormalizeDomain(t *testing.T) {
	t.Parallel()
	good := []struct {
		in, fqdn, unicode, sld, tld string
	}{
		{"example.dev", "example.dev", "example.dev", "example", "dev"},
		{"Example.COM.", "example.com", "example.com", "example", "com"},
		{"  example.app\t", "example.app", "example.app", "example", "app"},
		{"bücher.dev", "xn--bcher-kva.dev", "bücher.dev", "xn--bcher-kva", "dev"},
		{"BÜCHER.DEV", "xn--bcher-kva.dev", "bücher.dev", "xn--bcher-kva", "dev"},
		{"xn--bcher-kva.dev", "xn--bcher-kva.dev", "bücher.dev", "xn--bcher-kva", "dev"},
		{"example.co.uk", "example.co.uk", "example.co.uk", "example", "co.uk"},
		{"日本語.jp", "xn--wgv71a119e.jp", "日本語.jp", "xn--wgv71a119e", "jp"},
		{"web-2024.io", "web-2024.io", "web-2024.io", "web-2024", "io"},
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63), "com"},
	}
	for _, tc := range good {
		t.Run("ok/"+tc.in, func(t *testing.T) {
			t.Parallel()
			d, err := NormalizeDomain(tc.in)
			if err != nil {
				t.Fatalf("NormalizeDomain(%q): %v", tc.in, err)
			}
			want := Domain{FQDN: tc.fqdn, Unicode: tc.unicode, SLD: tc.sld, TLD: tc.tld}
			if d != want {
				t.Fatalf("NormalizeDomain(%q) = %+v, want %+v", tc.in, d, want)
			}
		})
	}
	bad := []struct {
		name, in, wantInError string
	}{
		{"cyrillic homoglyph", "gооgle.com", "mixes Latin and Cyrillic"},
		{"whole-script confusable", "аррӏе.com", `look like the Latin name "apple"`},
		{"punycode confusable", "xn--80ak6aa92e.com", `look like the Latin name "apple"`},
		{"greek mixed", "pαypal.com", "mixes Latin and Greek"},
		{"empty label", "a..com", "empty label"},
		{"leading dot", ".example.com", "empty label"},
		{"64-char label", strings.Repeat("a", 64) + ".com", "over the limit of 63"},
		{"too long", strings.Repeat("abcdefghi.", 26) + "com", "over the limit of 253"},
		{"public suffix alone", "co.uk", "is a public suffix itself"},
		{"tld alone", "com", "single label"},
		{"subdomain", "www.example.com", `the registrable name is "example.com"`},
		{"private suffix", "myapp.github.io", "privately managed suffix"},
		{"unknown tld", "example.notatld", "known top-level domain"},
		{"underscore", "my_site.com", "not a valid internationalised domain name"},
		{"leading hyphen", "-site.com", "not a valid internationalised domain name"},
		{"space inside", "my site.com", "whitespace"},
		{"empty", "   ", "empty"},
		{"url", "https://example.com/", "not a valid"},
		{"invalid utf8", "ex\xffample.com", "not valid UTF-8"},
		{"huge", strings.Repeat("a", 5000), "far longer"},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := NormalizeDomain(tc.in)
			if err == nil {
				t.Fatalf("NormalizeDomain(%q) = %+v, want an error", tc.in, d)
			}
			var ie *InputError
			if !asInputError(err, &ie) || ie.Field != "domain" || ie.Allowed == "" {
				t.Fatalf("error %v is not an InputError naming the field and what is allowed", err)
			}
			if !strings.Contains(err.Error(), tc.wantInError) {
				t.Fatalf("NormalizeDomain(%q) error %q does not say %q", tc.in, err, tc.wantInError)
			}
		})
	}
}

func asInputError(err error, target **InputError) bool {
	ie, ok := err.(*InputError)
	if ok {
		*target = ie
	}
	return ok
}

// FuzzNormalizeDomain: never panics; anything accepted is stable, ASCII,
// within DNS limits, registrable, round-trips through IDNA, has no label that
// looks like ASCII without being ASCII, and displays ASCII first.
func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range []string{"example.com", "bücher.dev", "gооgle.com", "a..com", "co.uk", "xn--bcher-kva.dev",
		"EXAMPLE.COM.", "www.example.co.uk", "xn--80ak6aa92e.com", "日本語.jp", "-a.com", "a-.com", "xn--.com", "\x00.com",
		"ɡoogle.com", "ɢoogle.com", "gıthub.com", "paypaı.com", "ꜱcope.com", "xn--oogle-wmc.com", "münchen.de", "straße.de"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		d, err := NormalizeDomain(in)
		if err != nil {
			if !IsInputError(err) {
				t.Fatalf("non-input error %T %v", err, err)
			}
			return
		}
		if len(d.FQDN) > maxNameOctets || d.FQDN != strings.ToLower(d.FQDN) || strings.HasSuffix(d.FQDN, ".") {
			t.Fatalf("accepted non-canonical %q", d.FQDN)
		}
		for i := 0; i < len(d.FQDN); i++ {
			if d.FQDN[i] >= utf8.RuneSelf {
				t.Fatalf("FQDN %q is not ASCII", d.FQDN)
			}
		}
		if d.SLD+"."+d.TLD != d.FQDN || strings.Contains(d.SLD, ".") {
			t.Fatalf("parts %q + %q do not make %q", d.SLD, d.TLD, d.FQDN)
		}
		again, err := NormalizeDomain(d.FQDN)
		if err != nil || again != d {
			t.Fatalf("not idempotent: %q -> %+v -> %+v, %v", in, d, again, err)
		}
		if u, err := idna.Registration.ToUnicode(d.FQDN); err != nil || u != d.Unicode {
			t.Fatalf("unicode form %q does not round-trip (%q, %v)", d.Unicode, u, err)
		}
		for _, l := range strings.Split(d.Unicode, ".") {
			if !isASCIIString(l) && skeletonIsASCII(l) {
				t.Fatalf("accepted %q: label %q looks like ASCII", in, l)
			}
		}
		if d.Unicode != d.FQDN && !strings.HasPrefix(d.Display(), d.FQDN+" (contains non-ASCII letters") {
			t.Fatalf("display %q does not start with the ASCII form and the warning", d.Display())
		}
	})
}
