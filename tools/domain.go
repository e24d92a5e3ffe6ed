package tools

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
	"golang.org/x/text/unicode/norm"
)

// Domain is a normalised, registrable domain name.
type Domain struct {
	// FQDN is the ASCII (punycode) name without a trailing dot: "xn--bcher-kva.dev".
	FQDN string `json:"fqdn"`
	// Unicode is the display form: "bücher.dev". Equal to FQDN for ASCII names.
	Unicode string `json:"unicode"`
	// SLD is the registrable label, ASCII: "xn--bcher-kva".
	SLD string `json:"sld"`
	// TLD is the ICANN public suffix it sits under: "dev", "co.uk".
	TLD string `json:"tld"`
}

const (
	maxDomainInput = 1024 // bytes accepted before any processing
	maxNameOctets  = 253
	maxLabelOctets = 63

	domainAllowed = "a registrable domain directly under a public suffix, such as example.com, " +
		"example.co.uk or bücher.dev: letters, digits and hyphens in one script per label, " +
		"not made to look like an ASCII name, labels of 1-63 characters, at most 253 characters in all"
)

// Display is the name as a human should first read it: the ASCII form, and
// for an internationalised name a warning before the Unicode form, so a
// look-alike can never be the only thing an approver sees:
// "xn--bcher-kva.dev (contains non-ASCII letters: bücher.dev)".
func (d Domain) Display() string {
	if d.Unicode == "" || d.Unicode == d.FQDN {
		return d.FQDN
	}
	return d.FQDN + " (contains non-ASCII letters: " + d.Unicode + ")"
}

// NormalizeDomain turns agent input into the one canonical form every later
// step (pricing, policy, idempotency, the registrar) uses. It trims, lower-cases,
// strips one trailing dot, converts IDN to punycode with the IDNA registration
// profile, refuses mixed-script and whole-script confusable labels and labels
// whose UTS #39 skeleton is ASCII (ɡoogle, gıthub: see asciiLookalike), and
// requires a name that is registrable exactly: one label under an ICANN public
// suffix (not a suffix alone, not a subdomain, not a private suffix).
func NormalizeDomain(raw string) (Domain, error) {
	n, err := normalizeName("domain", domainAllowed, raw)
	if err != nil {
		return Domain{}, err
	}
	if n.etld1 != n.ascii {
		return Domain{}, inputErr("domain", domainAllowed, "%q is a subdomain; the registrable name is %q", n.input, n.etld1)
	}
	return Domain{
		FQDN:    n.ascii,
		Unicode: n.unicode,
		SLD:     strings.TrimSuffix(n.ascii, "."+n.suffix),
		TLD:     n.suffix,
	}, nil
}

// Hostname is a normalised hostname: a registrable domain (the apex) or a
// name under it.
type Hostname struct {
	// FQDN is the ASCII (punycode) name without a trailing dot.
	FQDN string `json:"fqdn"`
	// Unicode is the display form; equal to FQDN for ASCII names.
	Unicode string `json:"unicode"`
	// Domain is the registrable domain it is on ("example.dev" for
	// "www.example.dev").
	Domain string `json:"domain"`
	// Apex is true when the hostname is the registrable domain itself.
	Apex bool `json:"apex"`
}

// Display is the name as a human should first read it (see Domain.Display).
func (h Hostname) Display() string {
	if h.Unicode == "" || h.Unicode == h.FQDN {
		return h.FQDN
	}
	return h.FQDN + " (contains non-ASCII letters: " + h.Unicode + ")"
}

const hostnameAllowed = "a hostname on a registrable domain, such as example.com or www.example.com: " +
	"letters, digits and hyphens in one script per label, not made to look like an ASCII name, no wildcard, " +
	"labels of 1-63 characters, at most 253 characters in all"

// NormalizeHostname is NormalizeDomain for a hostname: the same
// canonical form and look-alike rules, for the registrable domain itself
// (the apex) or any name under it.
func NormalizeHostname(raw string) (Hostname, error) {
	n, err := normalizeName("hostname", hostnameAllowed, raw)
	if err != nil {
		return Hostname{}, err
	}
	return Hostname{FQDN: n.ascii, Unicode: n.unicode, Domain: n.etld1, Apex: n.ascii == n.etld1}, nil
}

// name is a checked name: its ASCII and Unicode forms, its public suffix
// and its registrable domain.
type name struct {
	input, ascii, unicode, suffix, etld1 string
}

// normalizeName trims, lower-cases, converts to punycode and applies the
// script and look-alike rules; field and allowed name the argument in
// errors.
func normalizeName(field, allowed, raw string) (name, error) {
	fail := func(format string, args ...any) (name, error) {
		return name{}, inputErr(field, allowed, format, args...)
	}
	if len(raw) > maxDomainInput {
		return fail("%d bytes is far longer than any domain name", len(raw))
	}
	if !utf8.ValidString(raw) {
		return fail("not valid UTF-8")
	}
	s := strings.TrimSpace(raw)
	if s == "" {
		return fail("empty")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fail("%q contains whitespace or control characters", s)
		}
	}
	s = strings.TrimSuffix(s, ".")
	s = norm.NFC.String(strings.ToLower(s))
	if s == "" || strings.HasPrefix(s, ".") {
		return fail("%q has an empty label", raw)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return fail("%q has an empty label (two dots in a row)", strings.TrimSpace(raw))
		}
	}
	if len(labels) < 2 {
		return fail("%q is a single label; a name needs at least a name and an extension", s)
	}
	for _, l := range labels {
		if err := checkScripts(l); err != nil {
			return fail("label %q %s", l, err)
		}
	}
	// Lengths are checked on the encoded form with our own message, so the
	// IDNA pass runs without its terser length check.
	ascii, err := registrationNoLength.ToASCII(s)
	if err != nil {
		return fail("%q is not a valid internationalised domain name (%s)", s, idnaReason(err))
	}
	if len(ascii) > maxNameOctets {
		return fail("%q is %d octets long once encoded, over the limit of %d", s, len(ascii), maxNameOctets)
	}
	for _, l := range strings.Split(ascii, ".") {
		if len(l) > maxLabelOctets {
			return fail("label %q is %d octets long, over the limit of %d", l, len(l), maxLabelOctets)
		}
	}
	if _, err := idna.Registration.ToASCII(ascii); err != nil {
		return fail("%q is not a valid domain name (%s)", s, idnaReason(err))
	}
	// Labels that arrive as punycode are decoded and held to the same script rules.
	unicodeName, err := idna.Registration.ToUnicode(ascii)
	if err != nil {
		return fail("%q does not decode to a valid name (%s)", ascii, idnaReason(err))
	}
	for _, l := range strings.Split(unicodeName, ".") {
		if err := checkScripts(l); err != nil {
			return fail("label %q %s", l, err)
		}
		if err := asciiLookalike(l); err != nil {
			return fail("label %q %s; register the ASCII name itself if it is yours", l, err)
		}
	}

	suffix, icann := publicsuffix.PublicSuffix(ascii)
	if suffix == ascii {
		return fail("%q is a public suffix itself; names are registered under it (e.g. example.%s)", s, ascii)
	}
	if !icann {
		if strings.Contains(suffix, ".") {
			return fail("%q sits under %q, a privately managed suffix, not one a registrar sells", s, suffix)
		}
		return fail("%q does not end in a known top-level domain", s)
	}
	etld1, err := publicsuffix.EffectiveTLDPlusOne(ascii)
	if err != nil {
		return fail("%q is not registrable: %v", s, err)
	}
	return name{input: s, ascii: ascii, unicode: unicodeName, suffix: suffix, etld1: etld1}, nil
}

// registrationNoLength is the IDNA registration profile without the DNS
// length check.
var registrationNoLength = idna.New(idna.ValidateForRegistration(), idna.VerifyDNSLength(false))

func idnaReason(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "idna: ")
	return msg
}

// scriptsAllowedTogether are the mixes UTS #39's "highly restrictive" level
// permits in one label; anything else mixing scripts is refused.
var scriptsAllowedTogether = [][]string{
	{"Latin", "Han", "Hiragana", "Katakana"},
	{"Latin", "Han", "Bopomofo"},
	{"Latin", "Han", "Hangul"},
}

// checkScripts refuses labels that mix scripts (gооgle with Cyrillic о) and
// labels written wholly in Cyrillic or Greek letters that look Latin (раураl).
func checkScripts(label string) error {
	seen := map[string]bool{}
	var order []string
	lookalikes, letters := 0, 0
	for _, r := range label {
		if r < utf8.RuneSelf {
			if r >= 'a' && r <= 'z' {
				if !seen["Latin"] {
					seen["Latin"] = true
					order = append(order, "Latin")
				}
			}
			continue
		}
		sc := scriptOf(r)
		if sc == "" {
			continue
		}
		if !seen[sc] {
			seen[sc] = true
			order = append(order, sc)
		}
		if unicode.IsLetter(r) {
			letters++
			if _, ok := latinLookalike[r]; ok {
				lookalikes++
			}
		}
	}
	if len(order) > 1 && !mixAllowed(seen) {
		return fmt.Errorf("mixes %s letters, which is how look-alike names are built", strings.Join(order, " and "))
	}
	if len(order) == 1 && (order[0] == "Cyrillic" || order[0] == "Greek") && letters > 0 && lookalikes == letters {
		var latin strings.Builder
		for _, r := range label {
			if l, ok := latinLookalike[r]; ok {
				latin.WriteRune(l)
			} else {
				latin.WriteRune(r)
			}
		}
		return fmt.Errorf("is written in %s letters that look like the Latin name %q", order[0], latin.String())
	}
	return nil
}

func mixAllowed(seen map[string]bool) bool {
	for _, set := range scriptsAllowedTogether {
		ok := true
		for sc := range seen {
			found := false
			for _, allowed := range set {
				if sc == allowed {
					found = true
					break
				}
			}
			if !found {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// scriptOf names the Unicode script of r, or "" for Common/Inherited runes
// (digits, hyphens, combining marks) that belong to every script.
func scriptOf(r rune) string {
	if unicode.Is(unicode.Common, r) || unicode.Is(unicode.Inherited, r) {
		return ""
	}
	for _, name := range commonScripts {
		if unicode.Is(unicode.Scripts[name], r) {
			return name
		}
	}
	for name, table := range unicode.Scripts {
		if unicode.Is(table, r) {
			return name
		}
	}
	return "Unknown"
}

// commonScripts are tried first so the usual case does not scan every table.
var commonScripts = []string{"Latin", "Cyrillic", "Greek", "Han", "Hiragana", "Katakana", "Hangul", "Arabic", "Hebrew", "Devanagari", "Thai"}

// latinLookalike maps Cyrillic and Greek letters to the Latin letter they are
// mistaken for (after lower-casing).
var latinLookalike = map[rune]rune{
	// Cyrillic
	'а': 'a', 'в': 'b', 'е': 'e', 'к': 'k', 'м': 'm', 'н': 'h', 'о': 'o', 'р': 'p', 'с': 'c',
	'т': 't', 'у': 'y', 'х': 'x', 'ѕ': 's', 'і': 'i', 'ј': 'j', 'ԁ': 'd', 'ԛ': 'q', 'ԝ': 'w',
	'һ': 'h', 'ӏ': 'l', 'ү': 'y',
	// Greek
	'α': 'a', 'ε': 'e', 'ι': 'i', 'κ': 'k', 'ν': 'v', 'ο': 'o', 'ρ': 'p', 'τ': 't', 'υ': 'u',
	'χ': 'x', 'ω': 'w',
}
