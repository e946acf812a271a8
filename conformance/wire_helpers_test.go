package conformance

// wire_helpers_test.go: speaking the upper layer protocol by hand to the
// real gateway (for what a well-behaved requestor never sends), and
// watching the gateway process's goroutines, memory and descriptors.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// wireConn is a raw TCP connection to the gateway.
type wireConn struct {
	t        *testing.T
	c        net.Conn
	r        *pdu.Reader
	spoolDir string // the gateway's, for cases that look into it mid-way
}

// dialWire connects to addr. The connection is closed when owner ends
// (not t, which may be a subtest that hands the connection on: whether the
// gateway closes it by itself is checked later).
func dialWire(t *testing.T, owner testing.TB, addr string) *wireConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	owner.Cleanup(func() { c.Close() })
	return &wireConn{t: t, c: c, r: pdu.NewReader(c, pdu.Limits{}, nil)}
}

func (w *wireConn) write(b []byte) {
	w.t.Helper()
	w.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := w.c.Write(b); err != nil {
		w.t.Fatalf("writing %d bytes: %v", len(b), err)
	}
}

func (w *wireConn) send(p pdu.PDU) {
	w.t.Helper()
	b, err := pdu.Encode(p)
	if err != nil {
		w.t.Fatal(err)
	}
	w.write(b)
}

// read reads the next PDU, waiting at most d.
func (w *wireConn) read(d time.Duration) (pdu.PDU, error) {
	w.c.SetReadDeadline(time.Now().Add(d))
	return w.r.ReadPDU()
}

// expectAbort reads the next PDU and fails unless it is an A-ABORT with
// this source and reason (PS3.8 9.3.8, Table 9-26).
func (w *wireConn) expectAbort(source pdu.AbortSource, reason pdu.AbortReason) {
	w.t.Helper()
	p, err := w.read(5 * time.Second)
	if err != nil {
		w.t.Fatalf("want A-ABORT source %d reason %d, got error %v", source, reason, err)
	}
	ab, ok := p.(*pdu.Abort)
	if !ok {
		w.t.Fatalf("want A-ABORT source %d reason %d, got %v", source, reason, describePDU(p))
	}
	if ab.Source != source || ab.Reason != reason {
		w.t.Fatalf("A-ABORT source %d reason %d (%v), want source %d reason %d (%v)", ab.Source, ab.Reason, ab.Reason, source, reason, reason)
	}
}

// expectReject reads the next PDU and fails unless it is an
// A-ASSOCIATE-RJ with these result, source and reason (PS3.8 9.3.4,
// Table 9-21).
func (w *wireConn) expectReject(result pdu.RejectResult, source pdu.RejectSource, reason pdu.RejectReason) {
	w.t.Helper()
	p, err := w.read(5 * time.Second)
	if err != nil {
		w.t.Fatalf("want A-ASSOCIATE-RJ %d/%d/%d, got error %v", result, source, reason, err)
	}
	rj, ok := p.(*pdu.AssociateRJ)
	if !ok {
		w.t.Fatalf("want A-ASSOCIATE-RJ %d/%d/%d, got %v", result, source, reason, describePDU(p))
	}
	if rj.Result != result || rj.Source != source || rj.Reason != reason {
		w.t.Fatalf("A-ASSOCIATE-RJ %d/%d/%d, want %d/%d/%d", rj.Result, rj.Source, rj.Reason, result, source, reason)
	}
}

// expectAccept reads the next PDU and fails unless it is an
// A-ASSOCIATE-AC; it returns the result of each presentation context.
func (w *wireConn) expectAccept() map[uint8]pdu.PresentationContextAC {
	w.t.Helper()
	p, err := w.read(5 * time.Second)
	if err != nil {
		w.t.Fatalf("want A-ASSOCIATE-AC, got error %v", err)
	}
	ac, ok := p.(*pdu.AssociateAC)
	if !ok {
		w.t.Fatalf("want A-ASSOCIATE-AC, got %v", describePDU(p))
	}
	out := map[uint8]pdu.PresentationContextAC{}
	for _, pc := range ac.PresentationContexts {
		out[pc.ID] = pc
	}
	return out
}

// expectSilence fails if a PDU arrives within d (a timeout is what we
// want; the gateway closing is fine too).
func (w *wireConn) expectSilence(d time.Duration) {
	w.t.Helper()
	p, err := w.read(d)
	if err == nil {
		w.t.Fatalf("want no answer, got %v", describePDU(p))
	}
}

// response reads P-DATA-TF PDUs until a whole command set has arrived and
// decodes it.
func (w *wireConn) response() *dimse.Command {
	w.t.Helper()
	var buf []byte
	for {
		p, err := w.read(10 * time.Second)
		if err != nil {
			w.t.Fatalf("waiting for a response: %v", err)
		}
		pd, ok := p.(*pdu.PDataTF)
		if !ok {
			w.t.Fatalf("want a response in P-DATA-TF, got %v", describePDU(p))
		}
		for _, v := range pd.PDVs {
			if !v.Command {
				w.t.Fatalf("data set fragment in a response")
			}
			buf = append(buf, v.Data...)
			if v.Last {
				c, err := dimse.DecodeCommand(buf)
				if err != nil {
					w.t.Fatalf("response command set: %v", err)
				}
				return c
			}
		}
	}
}

// release sends A-RELEASE-RQ, expects A-RELEASE-RP and closes (PS3.8
// 7.2: the requestor closes the transport after the RP).
func (w *wireConn) release() {
	w.t.Helper()
	w.send(&pdu.ReleaseRQ{})
	p, err := w.read(5 * time.Second)
	if err != nil {
		w.t.Fatalf("want A-RELEASE-RP, got error %v", err)
	}
	if _, ok := p.(*pdu.ReleaseRP); !ok {
		w.t.Fatalf("want A-RELEASE-RP, got %v", describePDU(p))
	}
	w.c.Close()
}

// waitClosed reads and discards until the gateway closes the connection
// (EOF or reset), and returns when that happened, or an error after
// timeout.
func waitClosed(c net.Conn, timeout time.Duration) (time.Time, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return time.Now(), nil
		}
		return time.Time{}, err
	}
}

func describePDU(p pdu.PDU) string {
	switch p := p.(type) {
	case *pdu.Abort:
		return fmt.Sprintf("A-ABORT source %d reason %d", p.Source, p.Reason)
	case *pdu.AssociateRJ:
		return fmt.Sprintf("A-ASSOCIATE-RJ %d/%d/%d", p.Result, p.Source, p.Reason)
	case nil:
		return "nothing"
	}
	return p.Type().String()
}

// Hand-built A-ASSOCIATE-RQ pieces (PS3.8 9.3.2): every length is ours to
// get wrong.

// wireItem is an item or sub-item: type, reserved, length (u16), value
// (PS3.8 9.3.2, Table 9-11 ff.).
func wireItem(typ byte, value []byte) []byte {
	b := []byte{typ, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(value)))
	return append(b, value...)
}

// wireItemLen is an item whose length field says n, whatever follows.
func wireItemLen(typ byte, n uint16, value []byte) []byte {
	b := []byte{typ, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], n)
	return append(b, value...)
}

func appContextItem(ctx string) []byte { return wireItem(0x10, []byte(ctx)) }

// pcItem is a presentation context item of a request (PS3.8 9.3.2.2): ID,
// three reserved bytes, one abstract syntax sub-item, transfer syntaxes.
func pcItem(id byte, abstract string, ts ...string) []byte {
	v := []byte{id, 0, 0, 0}
	v = append(v, wireItem(0x30, []byte(abstract))...)
	for _, s := range ts {
		v = append(v, wireItem(0x40, []byte(s))...)
	}
	return wireItem(0x20, v)
}

// userInfoItem carries a maximum length sub-item (PS3.8 D.1) and an
// implementation class UID (PS3.7 D.3.3.2).
func userInfoItem(maxLen uint32) []byte {
	ml := make([]byte, 4)
	binary.BigEndian.PutUint32(ml, maxLen)
	v := wireItem(0x51, ml)
	v = append(v, wireItem(0x52, []byte("1.2.826.0.1.3680043.9.7433.1"))...)
	return wireItem(0x50, v)
}

// associateRQ is an A-ASSOCIATE-RQ PDU with the 68 fixed bytes of PS3.8
// Table 9-11 (protocol version, called and calling AE, reserved) and the
// given items, as they are.
func associateRQ(version uint16, called, calling string, items ...[]byte) []byte {
	body := make([]byte, 68)
	binary.BigEndian.PutUint16(body, version)
	copy(body[4:20], fmt.Sprintf("%-16s", called))
	copy(body[20:36], fmt.Sprintf("%-16s", calling))
	for _, it := range items {
		body = append(body, it...)
	}
	return wirePDU(byte(pdu.TypeAssociateRQ), body)
}

// wirePDU is a PDU header (type, reserved, length u32) and body.
func wirePDU(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], uint32(len(body)))
	return append(b, body...)
}

// pduHeader is a PDU header claiming n bytes, followed by extra bytes.
func pduHeader(typ byte, n uint32, extra []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], n)
	return append(b, extra...)
}

// Presentation contexts the adversarial associations propose.
const (
	pcVerification = 1 // Verification, Implicit VR LE
	pcStoreCT      = 3 // CT Image Storage, Explicit VR LE
	pcQuery        = 5 // Study Root C-FIND: not ours to serve, rejected (3)
)

const studyRootFind = "1.2.840.10008.5.1.4.1.2.2.1"

// goodRQ is a valid request proposing the three contexts above.
func goodRQ(calling string) []byte {
	return associateRQ(1, calledAE, calling,
		appContextItem(uid.ApplicationContext),
		pcItem(pcVerification, uid.Verification, tsImplicitLE),
		pcItem(pcStoreCT, sopCTImage, tsExplicitLE),
		pcItem(pcQuery, studyRootFind, tsImplicitLE),
		userInfoItem(16384))
}

// associate sends goodRQ and checks the answer: contexts 1 and 3
// accepted, 5 rejected.
func (w *wireConn) associate(calling string) {
	w.t.Helper()
	w.write(goodRQ(calling))
	pcs := w.expectAccept()
	if pcs[pcVerification].Result != pdu.ContextAcceptance || pcs[pcStoreCT].Result != pdu.ContextAcceptance ||
		pcs[pcQuery].Result != pdu.ContextAbstractSyntaxNotSupported {
		w.t.Fatalf("presentation context results %+v; want 1 and 3 accepted, 5 rejected (3)", pcs)
	}
}

// pdata is a P-DATA-TF of the given PDVs (PS3.8 9.3.5).
func pdata(pdvs ...[]byte) []byte {
	var body []byte
	for _, v := range pdvs {
		body = append(body, v...)
	}
	return wirePDU(byte(pdu.TypePDataTF), body)
}

// pdv is one presentation data value item (PS3.8 9.3.5.1, Annex E.2):
// length, context ID, message control header, fragment.
func pdv(ctx byte, command, last bool, data []byte) []byte {
	return pdu.AppendPDV(nil, ctx, command, last, data)
}

func cmdPDV(ctx byte, c *dimse.Command) []byte {
	return pdv(ctx, true, true, dimse.AppendCommand(nil, c))
}

func echoCommand(id uint16) *dimse.Command {
	return &dimse.Command{AffectedSOPClassUID: uid.Verification, CommandField: dimse.CEchoRQ, MessageID: id,
		CommandDataSetType: dimse.NoDataSet, Has: dimse.HasAffectedSOPClassUID | dimse.HasMessageID}
}

func storeCommand(id uint16, sopClass, inst string) *dimse.Command {
	return &dimse.Command{AffectedSOPClassUID: sopClass, CommandField: dimse.CStoreRQ, MessageID: id,
		AffectedSOPInstanceUID: inst,
		Has:                    dimse.HasAffectedSOPClassUID | dimse.HasMessageID | dimse.HasPriority | dimse.HasAffectedSOPInstanceUID}
}

// storedSomewhere counts the objects the gateway committed: still queued,
// dead-lettered, kept as delivered, or filed into the archive directory.
func storedSomewhere(t testing.TB, spoolDir, archive string) int {
	t.Helper()
	c := countSpool(t, spoolDir)
	n := c.Queued + c.Dead + c.Delivered
	if archive != "" {
		filepath.WalkDir(archive, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".dcm") {
				n++
			}
			return nil
		})
	}
	return n
}

// waitNoPartials waits until incoming/ is empty.
func waitNoPartials(t testing.TB, spoolDir string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := harness.PartialFiles(spoolDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("partial files left in incoming/ after %v: %v", timeout, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procSample is what the gateway process holds at one moment.
type procSample struct {
	Goroutines int
	RSS        int64 // VmRSS
	PromRSS    int64 // process_resident_memory_bytes
	FDs        int
}

func (s procSample) String() string {
	return fmt.Sprintf("%d goroutines, VmRSS %.1f MB, %d fds", s.Goroutines, float64(s.RSS)/(1<<20), s.FDs)
}

func sampleProc(t testing.TB, g *harness.Gateway) procSample {
	t.Helper()
	m, err := g.Scrape()
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	rss, err := g.RSS()
	if err != nil {
		t.Fatal(err)
	}
	fds, err := g.OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	return procSample{Goroutines: int(m.Get("go_goroutines")), RSS: rss, PromRSS: int64(m.Get("process_resident_memory_bytes")), FDs: fds}
}

// baseline samples the gateway once it is idle: a warm-up echo has run
// (the first association allocates pools, the metrics handler its
// buffers), and the goroutine count has settled.
func baseline(t *testing.T, g *harness.Gateway) procSample {
	t.Helper()
	echoWorks(t, g, "WARMUP")
	time.Sleep(200 * time.Millisecond)
	s := sampleProc(t, g)
	for i := 0; i < 10; i++ {
		time.Sleep(50 * time.Millisecond)
		n := sampleProc(t, g)
		if n.Goroutines < s.Goroutines {
			s.Goroutines = n.Goroutines
		}
		if n.RSS > s.RSS {
			s.RSS = n.RSS
		}
	}
	return s
}

// waitBackToBaseline waits until goroutines, descriptors and RSS are back
// within the margins of base, and fails with what it last saw otherwise.
func waitBackToBaseline(t *testing.T, g *harness.Gateway, base procSample, goroutineMargin int, rssMargin int64, timeout time.Duration) procSample {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := sampleProc(t, g)
		ok := s.Goroutines <= base.Goroutines+goroutineMargin && s.RSS <= base.RSS+rssMargin && s.FDs <= base.FDs+goroutineMargin
		if ok {
			return s
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v: %v; baseline %v (margins: %d goroutines and fds, %d MB)", timeout, s, base, goroutineMargin, rssMargin>>20)
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}
