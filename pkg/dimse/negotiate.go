package dimse

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// contextKind is what an accepted presentation context is for.
type contextKind uint8

const (
	kindVerification contextKind = iota + 1
	kindStorage
	kindCommitment // Storage Commitment Push Model, when Config.Commitment is set
	kindFind       // Query/Retrieve FIND, when Config.Find is set
	kindMove       // Query/Retrieve MOVE, when Config.Move is set
	kindGet        // Query/Retrieve GET, when Config.Move is set
)

// presContext is one proposed presentation context and what became of it.
type presContext struct {
	id       uint8
	abstract string
	ts       string // accepted transfer syntax
	result   pdu.ContextResult
	kind     contextKind
	peerSCP  bool // role selection gave the peer the SCP role (C-GET's C-STOREs go on it)
}

// notNegotiable lists registry transfer syntaxes that cannot carry a data
// set over the network: the retired media-only pseudo syntaxes of PS3.5
// (RFC 2557 MIME encapsulation and XML encoding).
var notNegotiable = map[string]bool{
	"1.2.840.10008.1.2.6.1": true,
	"1.2.840.10008.1.2.6.2": true,
}

// checkAssociateRQ finds what makes a decoded A-ASSOCIATE-RQ invalid beyond
// its structure (PS3.8 9.3.2.2: presentation context IDs are odd integers
// 1-255, unique within the request). An invalid request is Evt19, not Evt6.
func checkAssociateRQ(rq *pdu.AssociateRQ) error {
	seen := make(map[uint8]bool, len(rq.PresentationContexts))
	for _, pc := range rq.PresentationContexts {
		if pc.ID%2 == 0 {
			return fmt.Errorf("presentation context ID %d is not odd (PS3.8 9.3.2.2)", pc.ID)
		}
		if seen[pc.ID] {
			return fmt.Errorf("presentation context ID %d proposed twice", pc.ID)
		}
		seen[pc.ID] = true
	}
	if u := rq.UserInfo; u.HasMaxLength && u.MaxLength != 0 && u.MaxLength <= pdu.PDVHeaderLen {
		return fmt.Errorf("maximum length %d cannot carry a presentation data value", u.MaxLength)
	}
	return nil
}

// mayBeStorage says whether an abstract syntax missing from our registry
// could be a storage SOP class: a well-formed private UID (outside the DICOM
// root), or a DICOM UID in the storage branch 1.2.840.10008.5.1.4.1.1 that
// is newer than our table. Other DICOM UIDs (query/retrieve, worklist, ...)
// are known not to be storage.
func mayBeStorage(abstract string) bool {
	if uid.Valid(abstract) != nil {
		return false
	}
	if _, known := uid.Lookup(abstract); known {
		return false
	}
	const dicomRoot, storageBranch = "1.2.840.10008.", "1.2.840.10008.5.1.4.1.1."
	return !strings.HasPrefix(abstract, dicomRoot) || strings.HasPrefix(abstract, storageBranch)
}

// associateIndication is AE-6 after ARTIM is stopped: the service-provider
// checks what it must (protocol version), then our service user decides
// (Sta3) and answers with Evt7 (accept) or Evt8 (reject).
func (a *assoc) associateIndication(rq *pdu.AssociateRQ) State {
	a.calling, a.called = rq.CallingAE.String(), rq.CalledAE.String()
	if rq.ProtocolVersion&1 == 0 {
		// PS3.8 9.3.2: only bit 0 is tested.
		rj := &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceProviderACSE, Reason: pdu.RejectProtocolVersionNotSupported}
		a.reject(rj, fmt.Sprintf("protocol version 0x%04X not supported", rq.ProtocolVersion))
		a.send(rj)
		a.startARTIM()
		return Sta13
	}
	if rj, why := a.admit(rq); rj != nil {
		a.reject(rj, why)
		a.raise(Evt8, evInfo{p: rj})
		return Sta3
	}
	a.raise(Evt7, evInfo{p: a.accept(rq)})
	return Sta3
}

func (a *assoc) reject(rj *pdu.AssociateRJ, why string) {
	a.srv.m.rejected.WithLabelValues(pdu.RejectReasonString(rj.Source, rj.Reason)).Inc()
	a.setEnd(EndRejected, fmt.Sprintf("%v %v %s: %s", rj.Result, rj.Source, pdu.RejectReasonString(rj.Source, rj.Reason), why))
}

// admit applies the association policy, in the order a peer's
// administrator would want the reasons reported: application context, then
// who is called, who calls, then whether the spool can take objects, then
// capacity (taking a slot, and one of the peer's host, if there are).
func (a *assoc) admit(rq *pdu.AssociateRQ) (*pdu.AssociateRJ, string) {
	if rq.ApplicationContext != uid.ApplicationContext {
		return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectApplicationContextNotSupport},
			fmt.Sprintf("application context %q", rq.ApplicationContext)
	}
	pol := a.srv.policy.Load()
	if !pol.called[a.called] && (pol.CalledAE == nil || !pol.CalledAE(a.called)) {
		why := fmt.Sprintf("called AE %q is not one of %s", a.called, strings.Join(pol.AETitles, ", "))
		if pol.CalledAE != nil {
			why += ", nor one a route selects"
		}
		return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectCalledAENotRecognized}, why
	}
	if !pol.callingAllowed(a.calling, a.peerAddr(), a.peerCert) {
		return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectCallingAENotRecognized},
			fmt.Sprintf("calling AE %q from %v is not on the allowlist", a.calling, a.peerAddr())
	}
	ac, err := a.authenticate(rq)
	if err != nil {
		// PS3.7 D.3.3.7: the reason stays here; the peer learns only that
		// it was refused (1/1/1, no reason given).
		a.srv.m.authFailures.WithLabelValues(authLabel(err)).Inc()
		a.log.Warn("user identity refused", "calling_ae", a.calling, "err", err)
		return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectNoReason},
			"user identity refused: " + err.Error()
	}
	a.userAC = ac
	if admit := a.srv.cfg.Admit; admit != nil {
		if err := admit(); err != nil {
			return &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceProviderPresent, Reason: pdu.RejectTemporaryCongestion},
				err.Error()
		}
	}
	if !a.srv.acquireSlot() {
		return &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceProviderPresent, Reason: pdu.RejectLocalLimitExceeded},
			fmt.Sprintf("%d associations already open", a.srv.cfg.MaxAssociations)
	}
	a.hasSlot = true
	if !a.srv.acquireHost(a.peerAddr()) {
		return &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceProviderPresent, Reason: pdu.RejectLocalLimitExceeded},
			fmt.Sprintf("%d associations already open from %v", a.srv.cfg.MaxAssociationsPerHost, a.peerAddr())
	}
	a.hasHost = true
	return nil, ""
}

// accept builds the A-ASSOCIATE-AC: a result for every proposed context,
// our maximum length and implementation identification, and an answer to
// each role selection for a context we accept.
func (a *assoc) accept(rq *pdu.AssociateRQ) *pdu.AssociateAC {
	cfg := &a.srv.cfg
	ac := &pdu.AssociateAC{
		ProtocolVersion:    1,
		CalledAE:           rq.CalledAE,
		CallingAE:          rq.CallingAE,
		Reserved:           rq.Reserved,
		ApplicationContext: uid.ApplicationContext,
		UserInfo: pdu.UserInformation{
			HasMaxLength:              true,
			MaxLength:                 cfg.MaxPDULength,
			ImplementationClassUID:    cfg.ImplementationClassUID,
			ImplementationVersionName: cfg.ImplementationVersionName,
		},
	}
	ac.UserInfo.UserIdentityAC = a.userAC
	a.peerMax = 0
	if rq.UserInfo.HasMaxLength {
		a.peerMax = rq.UserInfo.MaxLength
	}
	a.ctxs = make(map[uint8]*presContext, len(rq.PresentationContexts))
	accepted := make(map[string]bool)
	syntaxes := make(map[string]bool)
	var summary []string
	for _, p := range rq.PresentationContexts {
		pc := a.srv.negotiateContext(p)
		a.ctxs[pc.id] = pc
		ac.PresentationContexts = append(ac.PresentationContexts, pdu.PresentationContextAC{ID: pc.id, Result: pc.result, TransferSyntax: pc.ts})
		if pc.result == pdu.ContextAcceptance {
			accepted[pc.abstract] = true
			syntaxes[pc.ts] = true
			summary = append(summary, fmt.Sprintf("%d:%s/%s", pc.id, pc.abstract, pc.ts))
		}
		a.log.Log(context.Background(), levelTrace, "presentation context", "id", pc.id, "abstract_syntax", pc.abstract,
			"proposed", strings.Join(p.TransferSyntaxes, ","), "result", pc.result, "transfer_syntax", pc.ts)
	}
	// PS3.7 D.3.3.4: answer role selection for the SOP classes we accept.
	// We act only as SCP of storage and verification: the peer may be SCU,
	// never SCP.
	// With C-GET served, a requester asking for the SCP role of a storage
	// SOP class gets it: the C-GET's C-STOREs go to it on its contexts
	// (PS3.4 C.4.3).
	for _, r := range rq.UserInfo.RoleSelections {
		if !accepted[r.SOPClassUID] {
			continue
		}
		scp := false
		if r.SCP && a.srv.cfg.Move != nil {
			for _, pc := range a.ctxs {
				if pc.abstract == r.SOPClassUID && pc.kind == kindStorage && pc.result == pdu.ContextAcceptance {
					pc.peerSCP, scp = true, true
				}
			}
		}
		ac.UserInfo.RoleSelections = append(ac.UserInfo.RoleSelections, pdu.RoleSelection{SOPClassUID: r.SOPClassUID, SCU: r.SCU, SCP: scp})
	}
	a.log.Info("association accepted",
		"calling_ae", a.calling, "called_ae", a.called,
		"proposed", len(rq.PresentationContexts), "accepted", len(summary),
		"transfer_syntaxes", strings.Join(slices.Compact(slices.Sorted(maps.Keys(syntaxes))), ","),
		"peer_max_pdu", a.peerMax, "peer_implementation", rq.UserInfo.ImplementationClassUID,
		"peer_version", rq.UserInfo.ImplementationVersionName)
	a.log.Debug("accepted presentation contexts", "contexts", strings.Join(summary, " "))
	return ac
}

// negotiateContext decides one presentation context: the abstract syntax
// must be Verification or a storage SOP class (or any well-formed UID when
// unknown classes are accepted); the transfer syntax is the first proposed
// one that we know, so the object passes through as it is, never
// transcoded.
func (s *Server) negotiateContext(p pdu.PresentationContextRQ) *presContext {
	pc := &presContext{id: p.ID, abstract: p.AbstractSyntax}
	switch {
	case p.AbstractSyntax == StorageCommitmentSOPClass, p.AbstractSyntax == PatientRootQueryFind, p.AbstractSyntax == StudyRootQueryFind,
		p.AbstractSyntax == PatientRootQueryMove, p.AbstractSyntax == StudyRootQueryMove,
		p.AbstractSyntax == PatientRootQueryGet, p.AbstractSyntax == StudyRootQueryGet:
		switch {
		case p.AbstractSyntax == StorageCommitmentSOPClass && s.cfg.Commitment != nil:
			pc.kind = kindCommitment
		case (p.AbstractSyntax == PatientRootQueryFind || p.AbstractSyntax == StudyRootQueryFind) && s.cfg.Find != nil:
			pc.kind = kindFind
		case (p.AbstractSyntax == PatientRootQueryMove || p.AbstractSyntax == StudyRootQueryMove) && s.cfg.Move != nil:
			pc.kind = kindMove
		case (p.AbstractSyntax == PatientRootQueryGet || p.AbstractSyntax == StudyRootQueryGet) && s.cfg.Move != nil:
			pc.kind = kindGet
		}
		if pc.kind == 0 {
			break
		}
		for _, ts := range commitmentSyntaxes {
			if slices.Contains(p.TransferSyntaxes, ts) {
				pc.ts, pc.result = ts, pdu.ContextAcceptance
				return pc
			}
		}
		pc.result = pdu.ContextTransferSyntaxesNotSupported
		return pc
	case p.AbstractSyntax == uid.Verification:
		pc.kind = kindVerification
	case uid.IsStorageSOPClass(p.AbstractSyntax):
		pc.kind = kindStorage
	case s.cfg.AcceptUnknownSOPClasses && mayBeStorage(p.AbstractSyntax):
		pc.kind = kindStorage
	}
	if pc.kind == 0 {
		pc.result = pdu.ContextAbstractSyntaxNotSupported
		return pc
	}
	for _, ts := range p.TransferSyntaxes {
		if _, ok := uid.LookupTransferSyntax(ts); ok && !notNegotiable[ts] {
			pc.ts = ts
			pc.result = pdu.ContextAcceptance
			return pc
		}
	}
	pc.result = pdu.ContextTransferSyntaxesNotSupported
	return pc
}

// peerAddr is the peer's IP address (the zero Addr when the transport has
// none, as in tests over pipes).
func (a *assoc) peerAddr() netip.Addr { return a.addr }

// peerAddrOf is the peer's IP address, IPv4-mapped IPv6 as IPv4 (one host,
// one count).
func peerAddrOf(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
