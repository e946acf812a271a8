package conformance

// dcmtk_test.go: running dcmtk's tools (storescu, dcmsend, echoscu,
// storescp, dcmdump), storescu's transfer syntax switches and dcmtk
// association negotiation profiles (-xf).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// dcmtkPackage is the Debian package that ships every tool used here; the
// Makefile installs it. A missing tool is a failure, never a skip: these
// tests are the only interoperability evidence we have.
const dcmtkPackage = "dcmtk"

// needTool returns the path of a dcmtk tool or fails the test.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: install the Debian package %q (apt-get install %s; `make test-deps` does it)", name, dcmtkPackage, dcmtkPackage)
	}
	return p
}

// runTool runs a tool to its end, killing it after timeout. It never
// calls t.Fatal, so goroutines may use it.
func runTool(timeout time.Duration, path string, args ...string) harness.Result {
	return harness.Run(context.Background(), timeout, path, args...)
}

// startStorescp runs storescp as AE title aet with args, writing into a
// temporary directory (its Dir), and kills it when the test ends.
func startStorescp(t testing.TB, aet string, args ...string) *harness.StoreSCP {
	t.Helper()
	needTool(t, "storescp")
	s, err := harness.StartStoreSCP(t.TempDir(), append([]string{"-aet", aet}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// storescuSwitch maps a transfer syntax to the storescu option that
// proposes it first (storescu --help, dcmtk 3.6.7; corpus README), so that
// a file in that syntax goes out as it is instead of being decompressed.
// Used with -R (propose only the SOP classes of the files sent).
var storescuSwitch = map[string]string{
	tsImplicitLE:             "-xi",
	tsExplicitLE:             "-xe",
	tsExplicitBE:             "-xb",
	tsDeflatedLE:             "-xd",
	"1.2.840.10008.1.2.4.50": "-xy", // JPEG Baseline
	"1.2.840.10008.1.2.4.51": "-xx", // JPEG Extended
	"1.2.840.10008.1.2.4.70": "-xs", // JPEG Lossless SV1
	"1.2.840.10008.1.2.4.80": "-xt", // JPEG-LS lossless
	"1.2.840.10008.1.2.4.81": "-xu", // JPEG-LS near-lossless
	"1.2.840.10008.1.2.4.90": "-xv", // JPEG 2000 lossless
	"1.2.840.10008.1.2.4.91": "-xw", // JPEG 2000
	"1.2.840.10008.1.2.5":    "-xr", // RLE Lossless
}

// profileOnly are transfer syntaxes dcmtk 3.6.7 knows but has no storescu
// switch for: JPEG Lossless Process 14 and the retired JPEG processes 6/8
// and 10/12. An -xf association profile gets them onto the wire.
var profileOnly = map[string]bool{
	"1.2.840.10008.1.2.4.53": true,
	"1.2.840.10008.1.2.4.55": true,
	"1.2.840.10008.1.2.4.57": true,
}

// uncompressed are the transfer syntaxes a sender may transcode between
// without loss (PS3.5 A.1-A.3).
var uncompressed = map[string]bool{tsImplicitLE: true, tsExplicitLE: true, tsExplicitBE: true}

// profileContext is one presentation context of a dcmtk association
// profile: an abstract syntax and its transfer syntaxes, in preference
// order.
type profileContext struct {
	Abstract string
	TS       []string
}

// writeProfile writes a dcmtk association negotiation profile (the -xf
// file of storescu/storescp: sections [[TransferSyntaxes]],
// [[PresentationContexts]], [[Profiles]], as in the corpus README) with one
// profile named "P", and returns its path. For an SCU each context is
// proposed as one presentation context; for an SCP (storescp) each abstract
// syntax may appear only once and its list is what it accepts.
func writeProfile(t testing.TB, dir string, ctxs []profileContext) string {
	t.Helper()
	var b strings.Builder
	tsKey := map[string]string{}
	var tsOrder []string
	for _, c := range ctxs {
		k := strings.Join(c.TS, "\\")
		if _, ok := tsKey[k]; !ok {
			tsKey[k] = fmt.Sprintf("TS%d", len(tsKey)+1)
			tsOrder = append(tsOrder, k)
		}
	}
	b.WriteString("[[TransferSyntaxes]]\n")
	for _, k := range tsOrder {
		fmt.Fprintf(&b, "[%s]\n", tsKey[k])
		for i, ts := range strings.Split(k, "\\") {
			fmt.Fprintf(&b, "TransferSyntax%d = %s\n", i+1, ts)
		}
	}
	b.WriteString("[[PresentationContexts]]\n[PC]\n")
	for i, c := range ctxs {
		fmt.Fprintf(&b, "PresentationContext%d = %s\\%s\n", i+1, c.Abstract, tsKey[strings.Join(c.TS, "\\")])
	}
	b.WriteString("[[Profiles]]\n[P]\nPresentationContexts = PC\n")
	f, err := os.CreateTemp(dir, "profile-*.cfg")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// storescuNegotiation returns the storescu options that make it send a
// file of sopClass in ts without transcoding: the matching switch with -R,
// or an -xf profile proposing exactly (sopClass, ts).
func storescuNegotiation(t testing.TB, dir, sopClass, ts string) []string {
	t.Helper()
	if sw, ok := storescuSwitch[ts]; ok {
		return []string{sw, "-R"}
	}
	if profileOnly[ts] {
		return []string{"-xf", writeProfile(t, dir, []profileContext{{sopClass, []string{ts}}}), "P"}
	}
	t.Fatalf("storescu 3.6.7 has no way to send transfer syntax %s", ts)
	return nil
}

// scpProfile writes a storescp profile accepting every SOP class of
// sopClasses in any transfer syntax of the corpus (explicit VR little
// endian preferred, like dicomgw when it is proposed first).
func scpProfile(t testing.TB, dir string, sopClasses []string) string {
	t.Helper()
	all := []string{tsExplicitLE, tsImplicitLE, tsExplicitBE, tsDeflatedLE}
	for ts := range storescuSwitch {
		if !uncompressed[ts] && ts != tsDeflatedLE {
			all = append(all, ts)
		}
	}
	for ts := range profileOnly {
		all = append(all, ts)
	}
	sort.Strings(all[4:])
	var ctxs []profileContext
	seen := map[string]bool{}
	for _, sc := range append([]string{uid.Verification}, sopClasses...) {
		if sc != "" && !seen[sc] {
			seen[sc] = true
			ctxs = append(ctxs, profileContext{sc, all})
		}
	}
	return writeProfile(t, dir, ctxs)
}
