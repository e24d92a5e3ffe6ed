// Command confusablesgen writes tools/confusables_table.go: the rows of Unicode's
// confusables.txt (UTS #39) that NormalizeDomain needs to tell a look-alike
// label, plus the Latin small capitals the file leaves out.
//
// It runs from go generate ./tools, with CONFUSABLES_TXT naming the data file:
//
//	CONFUSABLES_TXT=/path/to/confusables.txt go generate ./tools
//
// The file is Unicode's security data, version 16.0.0
// (https://www.unicode.org/Public/security/16.0.0/confusables.txt). Where
// unicode.org is out of reach, Debian's ICU source package (icu 76.1, in
// trixie) carries the same bytes as icu/source/data/unidata/confusables.txt:
// `apt-get source --download-only icu=76.1-4` with a deb-src line for trixie.
// The generator checks the version and the SHA-256 below, so the table always
// says exactly which data it holds. To move to a newer release, change both
// and regenerate; TestConfusablesData pins them too.
//
// Only what the domain check can meet is kept: rows whose source is a
// character IDNA's registration profile accepts in a label (or a part of
// one's decomposition) and whose target is ASCII. A label whose every
// non-ASCII character has such a row has an ASCII skeleton. The generator
// also checks that no ASCII letter, digit or hyphen maps outside ASCII, so an
// ASCII label's skeleton is always ASCII and "its skeleton is ASCII" is the
// same test as "it is confusable with some ASCII label".
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/runenames"
)

const (
	wantVersion = "16.0.0"
	wantSHA256  = "95bd0aad6dced5ebc63436f459c06ab21a8d107cd842fb57f5c3a1e91bca8611"
)

var (
	rowRE       = regexp.MustCompile(`^([0-9A-F]{4,6}) ;\t([0-9A-F ]+?) ;\tMA\t#`)
	namesRE     = regexp.MustCompile(`\) ([A-Z0-9][A-Z0-9 \-]*?) → ([A-Z0-9][A-Z0-9 ,\-]*?)\t#`)
	smallCapRE  = regexp.MustCompile(`^LATIN LETTER SMALL CAPITAL ([A-Z])$`)
	versionRE   = regexp.MustCompile(`^# Version: (\S+)`)
	dateRE      = regexp.MustCompile(`^# Date: (.+)$`)
	outFlag     = flag.String("out", "confusables_table.go", "file to write")
	versionFlag = flag.String("version", wantVersion, "the data version expected in the file")
	shaFlag     = flag.String("sha256", wantSHA256, "the SHA-256 expected of the file")
)

type row struct {
	r      rune
	to     string
	name   string
	source string // "confusables.txt" or "small capital"
}

func main() {
	flag.Parse()
	src := os.Getenv("CONFUSABLES_TXT")
	if src == "" {
		log.Fatal("set CONFUSABLES_TXT to Unicode's confusables.txt, version " + *versionFlag + " (see the comment at the top of tools/internal/confusablesgen/main.go)")
	}
	data, err := os.ReadFile(src)
	if err != nil {
		log.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != *shaFlag {
		log.Fatalf("%s has SHA-256 %s, want %s: not the confusables.txt this table is pinned to", src, got, *shaFlag)
	}

	inLabel := labelRunes()
	var version, date string
	var rows []row
	sc := bufio.NewScanner(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	for sc.Scan() {
		line := sc.Text()
		if m := versionRE.FindStringSubmatch(line); m != nil {
			version = m[1]
		}
		if m := dateRE.FindStringSubmatch(line); m != nil {
			date = m[1]
		}
		m := rowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		from := parseRune(m[1])
		var to strings.Builder
		for _, f := range strings.Fields(m[2]) {
			to.WriteRune(parseRune(f))
		}
		target := norm.NFD.String(to.String())
		if from < utf8.RuneSelf {
			if isLDH(from) && !isASCII(target) {
				log.Fatalf("%c maps to non-ASCII %q: an ASCII label's skeleton would not be ASCII", from, target)
			}
			continue
		}
		if !inLabel[from] || !isASCII(target) {
			continue
		}
		names := namesRE.FindStringSubmatch(line)
		if names == nil {
			log.Fatalf("no character names in %q", line)
		}
		if want := runenames.Name(from); want != "" && !strings.HasPrefix(want, "<") && want != names[1] {
			log.Printf("note: U+%04X is %q in confusables.txt and %q in Go's Unicode %s names", from, names[1], want, unicode.Version)
		}
		rows = append(rows, row{r: from, to: target, name: names[1], source: "confusables.txt"})
	}
	if err := sc.Err(); err != nil {
		log.Fatal(err)
	}
	if version != *versionFlag {
		log.Fatalf("%s is version %q, want %q", src, version, *versionFlag)
	}

	// Small capitals: UTS #39 maps a few (ꜱ → s) but leaves others as letters
	// of their own (ɢ, ʜ, ʀ). In a domain name, where case does not count, a
	// small capital reads as its letter, so the table adds them.
	have := map[rune]bool{}
	for _, r := range rows {
		have[r.r] = true
	}
	for r := range inLabel {
		name := runenames.Name(r)
		if m := smallCapRE.FindStringSubmatch(name); m != nil && !have[r] {
			rows = append(rows, row{r: r, to: strings.ToLower(m[1]), name: name, source: "small capital"})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].r < rows[j].r })

	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by tools/internal/confusablesgen from Unicode's confusables.txt; DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "package tools\n\n")
	fmt.Fprintf(&b, "// The confusables.txt (UTS #39) the table was generated from.\n")
	fmt.Fprintf(&b, "const (\n\tconfusablesVersion = %q\n\tconfusablesDate = %q\n\tconfusablesSHA256 = %q\n)\n\n", version, date, *shaFlag)
	fmt.Fprintf(&b, "// confusableRows are the characters a domain label may hold that look like\n")
	fmt.Fprintf(&b, "// ASCII, sorted by rune: %d rows.\n", len(rows))
	fmt.Fprintf(&b, "var confusableRows = []confusable{\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "\t{%s, %q, %q, %t},\n", runeLit(r.r), r.to, r.name, r.source == "small capital")
	}
	fmt.Fprintf(&b, "}\n")
	out, err := format.Source(b.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*outFlag, out, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s: %d rows from confusables.txt %s (%s)", *outFlag, len(rows), version, date)
}

// labelRunes are the runes that can appear in a label IDNA's registration
// profile accepts, and in their canonical decompositions (the skeleton is
// computed on NFD).
func labelRunes() map[rune]bool {
	out := map[rune]bool{}
	for r := rune(utf8.RuneSelf); r <= unicode.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		// Alone for right-to-left letters (the bidi rule refuses "a" before
		// them), after a letter for combining marks.
		_, errAlone := idna.Registration.ToASCII(string(r))
		_, errAfter := idna.Registration.ToASCII("a" + string(r))
		if errAlone != nil && errAfter != nil {
			continue
		}
		out[r] = true
		for _, d := range norm.NFD.String(string(r)) {
			if d >= utf8.RuneSelf {
				out[d] = true
			}
		}
	}
	return out
}

func parseRune(hex string) rune {
	n, err := strconv.ParseUint(hex, 16, 32)
	if err != nil {
		log.Fatal(err)
	}
	return rune(n)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isLDH(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-'
}

func runeLit(r rune) string {
	return fmt.Sprintf("0x%04X", r)
}
