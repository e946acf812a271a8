package conformance

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/conformance/internal/statement"
	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// statementFile is the DICOM Conformance Statement.
var statementFile = filepath.Join(harness.RepoRoot(), "conformance", "statement.md")

func readStatement(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(statementFile)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStatementUpToDate: the generated tables of statement.md (SOP
// classes, transfer syntaxes, defaults, implementation identification) are
// what the code's tables give today.
func TestStatementUpToDate(t *testing.T) {
	doc := readStatement(t)
	want, err := statement.Update(doc)
	if err != nil {
		t.Fatalf("conformance/statement.md: %v", err)
	}
	if bytes.Equal(doc, want) {
		return
	}
	got, exp := strings.Split(string(doc), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(got), len(exp)); i++ {
		var g, e string
		if i < len(got) {
			g = got[i]
		}
		if i < len(exp) {
			e = exp[i]
		}
		if g != e {
			t.Fatalf("conformance/statement.md is out of date (run: go run ./conformance/gen); first difference at line %d:\n have: %s\n want: %s", i+1, g, e)
		}
	}
}

// generatedBlock returns the lines of a generated block of the statement
// as it is on disk.
func generatedBlock(t *testing.T, doc []byte, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?s)<!-- BEGIN GENERATED ` + regexp.QuoteMeta(name) + `(?: [^>]*)? -->\n(.*?)<!-- END GENERATED ` + regexp.QuoteMeta(name) + ` -->`)
	m := re.FindSubmatch(doc)
	if m == nil {
		t.Fatalf("statement.md has no generated block %q", name)
	}
	return string(m[1])
}

// tableUIDs are the UIDs in the second column of a Markdown table.
func tableUIDs(block string) []string {
	var out []string
	for _, l := range strings.Split(block, "\n") {
		cells := strings.Split(l, "|")
		if len(cells) < 3 {
			continue
		}
		if u := strings.Trim(strings.TrimSpace(cells[2]), "`"); uid.Valid(u) == nil {
			out = append(out, u)
		}
	}
	return out
}

// TestStatementMatchesNegotiation: what the statement says the gateway
// accepts is what a running gateway accepts. Proposed every transfer
// syntax of PS3.6 (one presentation context each), it accepts exactly
// those of Table 4.2-4 and refuses those listed as not accepted; proposed
// every SOP class of Table 4.2-2, it accepts each one; a non-storage
// service (Study Root Query/Retrieve FIND) is refused; and its A-ASSOCIATE-AC
// carries the implementation class UID, version name prefix and maximum PDU
// length the statement gives.
func TestStatementMatchesNegotiation(t *testing.T) {
	doc := readStatement(t)
	listedTS := tableUIDs(generatedBlock(t, doc, "transfer-syntaxes"))
	refusedTS := tableUIDs(generatedBlock(t, doc, "transfer-syntaxes-refused"))
	listedSOP := tableUIDs(generatedBlock(t, doc, "sop-classes"))
	if len(listedTS) < 50 || len(listedSOP) < 200 {
		t.Fatalf("statement tables: %d accepted and %d refused transfer syntaxes, %d SOP classes", len(listedTS), len(refusedTS), len(listedSOP))
	}

	g, err := harness.Start(t.TempDir()+"/spool", "--spool-min-free", "0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop(20 * time.Second)
	dial := func(contexts []dimse.ProposedContext) *pdu.AssociateAC {
		t.Helper()
		c, err := dimse.Dial(context.Background(), g.Addr, dimse.DialConfig{CallingAE: "STATEMENT", CalledAE: calledAE, Contexts: contexts})
		if err != nil {
			t.Fatalf("association: %v\n%s", err, harness.Tail(g.Logs(), 4000))
		}
		ac := c.Accepted()
		if err := c.Release(); err != nil {
			t.Errorf("release: %v", err)
		}
		return ac
	}
	// results maps each proposed context (IDs 1, 3, 5, ... in order) to
	// its answer.
	results := func(ac *pdu.AssociateAC, n int) []pdu.PresentationContextAC {
		out := make([]pdu.PresentationContextAC, n)
		for _, pc := range ac.PresentationContexts {
			if i := int(pc.ID-1) / 2; i < n {
				out[i] = pc
			}
		}
		return out
	}

	// Transfer syntaxes, each alone in a context for Secondary Capture.
	all := uid.TransferSyntaxes()
	var contexts []dimse.ProposedContext
	for _, ts := range all {
		contexts = append(contexts, dimse.ProposedContext{AbstractSyntax: sopSecondaryCapture, TransferSyntaxes: []string{ts.UID}})
	}
	ac := dial(contexts)
	var accepted, refused []string
	for i, r := range results(ac, len(all)) {
		switch r.Result {
		case pdu.ContextAcceptance:
			if r.TransferSyntax != all[i].UID {
				t.Errorf("context for %s accepted with %s", all[i].UID, r.TransferSyntax)
			}
			accepted = append(accepted, all[i].UID)
		case pdu.ContextTransferSyntaxesNotSupported:
			refused = append(refused, all[i].UID)
		default:
			t.Errorf("context for %s: result %v", all[i].UID, r.Result)
		}
	}
	if !slices.Equal(accepted, listedTS) {
		t.Errorf("transfer syntaxes accepted by the gateway but not listed in Table 4.2-4: %v; listed but not accepted: %v", diff(accepted, listedTS), diff(listedTS, accepted))
	}
	if !slices.Equal(refused, refusedTS) {
		t.Errorf("the gateway refuses transfer syntaxes %v; the statement lists %v as not accepted", refused, refusedTS)
	}
	if got, want := generatedBlock(t, doc, "implementation"), dimse.ImplementationClassUID; !strings.Contains(got, "`"+ac.UserInfo.ImplementationClassUID+"`") || ac.UserInfo.ImplementationClassUID != want {
		t.Errorf("implementation class UID %q; the statement says\n%s", ac.UserInfo.ImplementationClassUID, got)
	}
	if v := ac.UserInfo.ImplementationVersionName; !strings.HasPrefix(v, "DICOMGW_") || len(v) > 16 {
		t.Errorf("implementation version name %q: the statement says DICOMGW_<version>, at most 16 characters", v)
	}
	if limits := generatedBlock(t, doc, "association-limits"); !strings.Contains(limits, "| "+strconv.Itoa(int(ac.UserInfo.MaxLength))+" bytes |") {
		t.Errorf("maximum PDU length %d; the statement says\n%s", ac.UserInfo.MaxLength, limits)
	}

	// SOP classes: Verification and every storage class, in associations
	// of at most 120 contexts (PS3.8 allows 128), plus one service the
	// gateway does not provide.
	const studyRootFind = "1.2.840.10008.5.1.4.1.2.2.1"
	sops := append(slices.Clone(listedSOP), studyRootFind)
	for start := 0; start < len(sops); start += 120 {
		chunk := sops[start:min(start+120, len(sops))]
		contexts = contexts[:0]
		for _, s := range chunk {
			contexts = append(contexts, dimse.ProposedContext{AbstractSyntax: s, TransferSyntaxes: []string{tsImplicitLE}})
		}
		for i, r := range results(dial(contexts), len(chunk)) {
			want := pdu.ContextAcceptance
			if chunk[i] == studyRootFind {
				want = pdu.ContextAbstractSyntaxNotSupported
			}
			if r.Result != want {
				t.Errorf("SOP class %s: result %v, want %v", chunk[i], r.Result, want)
			}
		}
	}
	want := []string{uid.Verification, dimse.StorageCommitmentSOPClass}
	for _, e := range uid.StorageSOPClasses() {
		want = append(want, e.UID)
	}
	if !slices.Equal(listedSOP, want) {
		t.Errorf("the statement's SOP classes differ from pkg/uid's: %v / %v", diff(listedSOP, want), diff(want, listedSOP))
	}
}

// diff is what a has and b has not.
func diff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// TestStatementStatuses: each row of the C-STORE status table names a
// status the way pkg/dimse does, and each Error Comment it quotes is one
// the code sends (cmd/dicomgw/store.go, pkg/dimse/message.go, and the UID
// problems of pkg/uid/policy.go), so the table cannot drift from the code
// unnoticed.
func TestStatementStatuses(t *testing.T) {
	doc := string(readStatement(t))
	rows := regexp.MustCompile(`(?m)^\| 0x([0-9A-F]{4}) \| ([^|]+) \| [^|]+ \| ([^|]+) \|$`).FindAllStringSubmatch(doc, -1)
	if len(rows) < 6 {
		t.Fatalf("found %d status rows in the statement", len(rows))
	}
	var sources []byte
	for _, f := range []string{"cmd/dicomgw/store.go", "pkg/dimse/message.go", "pkg/uid/policy.go", "pkg/dimse/commitment.go", "cmd/dicomgw/commitment.go"} {
		b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), f))
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, b...)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		code, _ := strconv.ParseUint(r[1], 16, 16)
		seen[r[1]] = true
		name := dimse.Status(code).String() // "0xA700 (Refused: out of resources)"
		if want := strings.TrimSpace(r[2]); !strings.Contains(name, "("+want+")") {
			t.Errorf("status 0x%s is called %q in the statement, %q in pkg/dimse", r[1], want, name)
		}
		for _, c := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(r[3], -1) {
			comment := c[1]
			// "C-FIND-RQ is not supported" comes from "%v is not supported";
			// "SOP Instance UID mismatch" from Attribute + " mismatch".
			comment = strings.NewReplacer("C-FIND-RQ ", "", "SOP Instance UID ", "", "SOP Class UID", "").Replace(comment)
			if !bytes.Contains(sources, []byte(comment)) {
				t.Errorf("status 0x%s: Error Comment %q is not in the code", r[1], c[1])
			}
		}
	}
	for _, s := range []dimse.Status{dimse.StatusSuccess, dimse.StatusOutOfResources, dimse.StatusDataSetDoesNotMatchClass,
		dimse.StatusCannotUnderstand, dimse.StatusSOPClassNotSupported, dimse.StatusUnrecognizedOperation} {
		if !seen[strings.TrimPrefix(s.String()[:6], "0x")] {
			t.Errorf("the statement's status table lacks %v", s)
		}
	}
}
