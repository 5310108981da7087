#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (fuzz/corpus/<target>/). The SIP seeds are RFC 4475
torture messages (valid and invalid, addresses changed to loopback) and the messages our
peers send; the YAML seeds are the shipped flows and configuration. Run from the repo
root after changing a seed; the corpus is committed."""
import glob, os, shutil, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def crlf(s):
    return s.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")

SDP = ("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
       "m=audio 6000 RTP/AVP 0 8 9 101\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\n"
       "a=rtpmap:9 G722/8000\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\na=ptime:20\na=sendrecv\n")

def sdp_bytes(s):
    return crlf(s)

SIP = {
 # RFC 4475 3.1.1.1 wsinv: compact forms, folding, comma-joined Via, odd spacing
 "wsinv": "INVITE sip:vivekg@127.0.0.1;unknownparam SIP/2.0\nTO :\n sip:vivekg@127.0.0.1 ;   tag    = 1918181833n\n"
          "from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@127.0.0.1>\n  ;\n  tag = 98asjd8\n"
          "MaX-fOrWaRdS: 0068\nCall-ID: wsinv.ndaksdj@192.0.2.1\nContent-Length   : 150\ncseq: 0009\n  INVITE\n"
          "Via  : SIP  /   2.0\n /UDP\n    127.0.0.2;branch=390skdjuw\ns :\nNewFangledHeader:   newfangled value\n continued newfangled value\n"
          "UnknownHeaderWithUnusualValue: ;;,,;;,;\nContent-Type: application/sdp\n"
          "Route:\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
          "v:  SIP  / 2.0  / TCP     127.0.0.3  ;\n  branch  =   z9hG4bK4fnd ,\n  SIP  /    2.0   / UDP  127.0.0.4\n ; branch = z9hG4bK30239\n"
          "m:\"Quoted string \\\"\\\"\" <sip:jdrosen@127.0.0.1> ; newparam =\n      newvalue ;\n  secondparam ; q = 0.33\n\n"
          "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\nt=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n",
 # 3.1.1.2 intmeth: a method with odd token characters
 "intmeth": "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@127.0.0.1 SIP/2.0\n"
            "Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-.!%66*_+`'~\nTo: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@127.0.0.1>\n"
            "From: token1~` token2'+_ token3*%!.- <sip:mundane@127.0.0.1>;fromParam''~+*_!.-%=\"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9\";tag=_token~1'+`*%!-.\n"
            "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\nCSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\nMax-Forwards: 255\n"
            "extensionHeader-!.%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\nContent-Length: 0\n\n",
 # 3.1.1.3 esc01: escaped characters in URIs
 "esc01": "INVITE sip:sips%3Auser%40example.com@127.0.0.1 SIP/2.0\nTo: sip:%75se%72@127.0.0.1\nFrom: <sip:I%20have%20spaces@127.0.0.1>;tag=938\n"
          "Max-Forwards: 87\ni: esc01.239409asdfakjkn23onasd0-3234\nCSeq: 234234 INVITE\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkdjuw\n"
          "C: application/sdp\nContact:\n  <sip:cal%6Cer@127.0.0.1;%6C%72;n%61me=v%61lue%25%34%31>\nContent-Length: 0\n\n",
 # 3.1.1.5 lwsdisp
 "lwsdisp": "OPTIONS sip:user@127.0.0.1 SIP/2.0\nTo: sip:user@127.0.0.1\nFrom: caller<sip:caller@127.0.0.1>;tag=323\nMax-Forwards: 70\n"
            "Call-ID: lwsdisp.1234abcd@funky.example.com\nCSeq: 60 OPTIONS\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkdjuw\nl: 0\n\n",
 # 3.1.1.8 dblreq: extra bytes after the body
 "dblreq": "REGISTER sip:127.0.0.1 SIP/2.0\nTo: sip:j.user@127.0.0.1\nFrom: sip:j.user@127.0.0.1;tag=43251j3j324\nMax-Forwards: 8\n"
           "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412\nContact: sip:j.user@127.0.0.2\nl: 0\nCSeq: 8 REGISTER\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKkdjuw23492\n\n"
           "INVITE sip:joe@127.0.0.1 SIP/2.0\nt: sip:joe@127.0.0.1\nFrom: sip:caller@127.0.0.1;tag=141334\nMax-Forwards: 8\nCall-ID: dblreq.0ha0isnda977644900765@127.0.0.4\nCSeq: 8 INVITE\n"
           "Via: SIP/2.0/UDP 127.0.0.5;branch=z9hG4bKkdjuw380234\nContent-Type: application/sdp\nContent-Length: 152\n\n" + SDP,
 # 3.1.1.9 semiuri
 "semiuri": "OPTIONS sip:user;par=u%40example.net@127.0.0.1 SIP/2.0\nTo: sip:j_user@127.0.0.1\nFrom: sip:caller@127.0.0.1;tag=33242\nMax-Forwards: 3\n"
            "Call-ID: semiuri.0ha0isndaksdj\nCSeq: 8 OPTIONS\nAccept: application/sdp, application/pkcs7-mime,\n        multipart/mixed, multipart/signed,\n        message/sip, message/sipfrag\n"
            "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkdjuw\nl: 0\n\n",
 # 3.1.1.10 transports
 "transports": "OPTIONS sip:user@127.0.0.1 SIP/2.0\nTo: sip:user@127.0.0.1\nFrom: <sip:caller@127.0.0.1>;tag=323\nMax-Forwards: 70\nCall-ID:  transports.kijh4akdnaqjkwendsasfdj\n"
               "Accept: application/sdp\nCSeq: 60 OPTIONS\nVia: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\nVia: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\n"
               "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\nVia: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\nVia: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\nl: 0\n\n",
 # 3.1.1.12 unreason: a reason phrase with UTF-8 and odd characters
 "unreason": "SIP/2.0 200 = 2**3 * 5**2 \xd0\xbd\xd0\xbe \xd1\x81\xd1\x82\xd0\xbe \xd0\xb4\xd0\xb5\xd0\xb2\xd1\x8f\xd0\xbd\xd0\xbe\xd1\x81\xd1\x82\xd0\xbe \xd0\xb4\xd0\xb5\xd0\xb2\xd1\x8f\xd1\x82\xd1\x8c\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sb-1;received=127.0.0.2\n"
             "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\nCSeq: 35 INVITE\nFrom: sip:user@127.0.0.1;tag=11141343\nTo: sip:user@127.0.0.1;tag=2229\nContent-Length: 0\n\n",
 # 3.1.1.13 noreason
 "noreason": "SIP/2.0 100 \nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sb-2\nCall-ID: noreason.asndj203insdf99223ndf\nCSeq: 35 INVITE\nFrom: <sip:user@127.0.0.1>;tag=11141343\nTo: <sip:user@127.0.0.1>;tag=2229\nContent-Length: 0\n\n",
 # 3.1.2.1 badinv01: header names with colons inside
 "badinv01": "INVITE sip:user@127.0.0.1 SIP/2.0\nTo: sip:j.user@127.0.0.1\nFrom: sip:caller@127.0.0.1;tag=134161461246\nMax-Forwards: 7\nCall-ID: badinv01.0ha0isndaksdjasdf3234nas\n"
             "CSeq: 8 INVITE\nVia: SIP/2.0/UDP 127.0.0.15;;,;,,\nContact: \"Joe\" <sip:joe@127.0.0.1>;;;;\nContent-Length: 152\nContent-Type: application/sdp\n\n" + SDP,
 # 3.1.2.2 clerr: Content-Length larger than the body
 "clerr": "INVITE sip:user@127.0.0.1 SIP/2.0\nMax-Forwards: 80\nTo: sip:j.user@127.0.0.1\nFrom: sip:caller@127.0.0.1;tag=93942939o2\nContact: <sip:caller@127.0.0.1>\n"
          "Call-ID: clerr.0ha0isndaksdjweiafasdk3\nCSeq: 8 INVITE\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-39234-23523\nContent-Type: application/sdp\nContent-Length: 9999\n\n" + SDP,
 # 3.1.2.3 ncl: negative Content-Length
 "ncl": "INVITE sip:user@127.0.0.1 SIP/2.0\nMax-Forwards: 254\nTo: sip:j.user@127.0.0.1\nFrom: sip:caller@127.0.0.1;tag=32394234\nCall-ID: ncl.0ha0isndaksdj2193423r542w35\n"
        "CSeq: 0 INVITE\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkdjuw\nContact: <sip:caller@127.0.0.1>\nContent-Type: application/sdp\nContent-Length: -999\n\n" + SDP,
 # 3.1.2.4 scalar02: overlarge scalar fields
 "scalar02": "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKkdjuw\nMax-Forwards: 300\nFrom: sip:user@127.0.0.1;tag=932\nTo: sip:user@127.0.0.1\n"
             "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\nCSeq: 36893488147419103232 REGISTER\nContact: <sip:user@127.0.0.1:3000>;expires=280297596632815\nExpires: 1024789758547895789\nl: 0\n\n",
 # 3.1.2.6 quotbal
 "quotbal": "INVITE sip:user@127.0.0.1 SIP/2.0\nTo: \"Mr. J. User <sip:j.user@127.0.0.1>\nFrom: sip:caller@127.0.0.1;tag=93334\nMax-Forwards: 10\nCall-ID: quotbal.aksdj\n"
            "Contact: <sip:caller@127.0.0.1:5060>\nCSeq: 8 INVITE\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKkdjuw\nContent-Type: application/sdp\nContent-Length: 152\n\n" + SDP,
 # 3.1.2.7 ltgtruri
 "ltgtruri": "INVITE <sip:user@127.0.0.1> SIP/2.0\nTo: sip:user@127.0.0.1\nFrom: sip:caller@127.0.0.1;tag=39291\nMax-Forwards: 23\nCall-ID: ltgtruri.1@127.0.0.1\nCSeq: 1 INVITE\n"
             "Via: SIP/2.0/UDP 127.0.0.1\nContact: <sip:caller@127.0.0.1>\nContent-Type: application/sdp\nContent-Length: 152\n\n" + SDP,
 # 3.1.2.8 lwsruri
 "lwsruri": "INVITE sip:user@127.0.0.1; lr SIP/2.0\nTo: sip:user@127.0.0.1;tag=3xfe-9921883-z9f\nFrom: sip:caller@127.0.0.1;tag=231413434\nMax-Forwards: 5\nCall-ID: lwsruri.asdfasdoeoi2323-asdfwrs\n"
            "CSeq: 2130706432 INVITE\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKkdjuw2395\nContact: <sip:caller@127.0.0.1>\nContent-Type: application/sdp\nContent-Length: 152\n\n" + SDP,
 # 3.1.2.12 multi01: several values in single-value fields
 "multi01": "INVITE sip:user@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkdjuw\nMax-Forwards: 70\nFrom: sip:caller@127.0.0.1;tag=3413415\nTo: sip:user@127.0.0.1\nTo: sip:other@127.0.0.1\n"
            "From: sip:caller@127.0.0.1;tag=2342342343\nCall-ID: multi01.98asdh@127.0.0.1\nCSeq: 59 INVITE\nCall-ID: multi01.98asdh@127.0.0.2\nContact: sip:caller@127.0.0.1\nContent-Type: application/sdp\nContent-Length: 152\n\n" + SDP,
 # 3.1.2.13 mcl01: several Content-Lengths
 "mcl01": "OPTIONS sip:user@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-4387t\nCall-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\nCSeq: 15932 OPTIONS\nContent-Length: 13\n"
          "Max-Forwards: 60\nContent-Length: 5\nFrom: \"Reesa\" <sip:reesa@127.0.0.1>;tag=43\nTo: \"Donovan\" <sip:donovan@127.0.0.1>\nContent-Type: text/plain\n\nfoo\n",
 # 3.1.2.15 regbadct: unescaped comma in a Contact URI
 "regbadct": "REGISTER sip:127.0.0.1 SIP/2.0\nTo: sip:user@127.0.0.1\nFrom: sip:user@127.0.0.1;tag=998332\nMax-Forwards: 70\nCall-ID: regbadct.k345asrl3fdbv@10.0.0.1\nCSeq: 1 REGISTER\n"
             "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKkdjuw\nContact: sip:user@127.0.0.1?Route=%3Csip:sip.example.com%3E\nl: 0\n\n",
 # 3.1.2.16 badvers
 "badvers": "OPTIONS sip:t.watson@127.0.0.1 SIP/7.0\nVia:     SIP/7.0/UDP 127.0.0.1;branch=z9hG4bKkdjuw\nMax-Forwards:     70\nFrom:    A. Bell <sip:a.g.bell@127.0.0.1>;tag=qweoiqpe\n"
            "To:      T. Watson <sip:t.watson@127.0.0.1>\nCall-ID: badvers.31417@127.0.0.1\nCSeq:    1 OPTIONS\nl: 0\n\n",
 # 3.1.2.17 mismatch01: CSeq method differs from the request's
 "mismatch01": "OPTIONS sip:user@127.0.0.1 SIP/2.0\nTo: sip:j.user@127.0.0.1\nFrom: sip:caller@127.0.0.1;tag=34525\nMax-Forwards: 6\nCall-ID: mismatch01.dj0234sxdfl3\nCSeq: 8 INVITE\n"
               "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkdjuw\nl: 0\n\n",
 # 3.1.2.19 bigcode
 "bigcode": "SIP/2.0 4294967301 better not break the receiver\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-sb-3\nCall-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\nCSeq: 353494 INVITE\n"
            "From: <sip:user@127.0.0.1>;tag=39ansfi3\nTo: <sip:user@127.0.0.1>;tag=902jndnke3\nContent-Length: 0\n\n",
 # IPv6 references (RFC 5118)
 "ipv6": "REGISTER sip:[::1] SIP/2.0\nTo: <sip:2001@[::1]>\nFrom: <sip:2001@[::1]>;tag=81x2\nVia: SIP/2.0/UDP [::1]:5070;rport;branch=z9hG4bKas3-111\nCall-ID: SSG9559905523997077@hlau_4100\n"
         "Max-Forwards: 70\nContact: \"Caller\" <sip:caller@[::1]:5070;transport=udp>\nCSeq: 98176 REGISTER\nContent-Length: 0\n\n",
 # What phones send
 "register_auth": "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK-reg-2\nMax-Forwards: 70\nFrom: <sip:2001@127.0.0.1>;tag=a1\nTo: <sip:2001@127.0.0.1>\n"
                  "Call-ID: reg-1@127.0.0.1\nCSeq: 2 REGISTER\nContact: <sip:2001@127.0.0.1:5070;transport=udp>;expires=300;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\n"
                  "Authorization: Digest username=\"2001\", realm=\"switchboard\", nonce=\"1.abc.def\", uri=\"sip:127.0.0.1\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"xyz\"\n"
                  "Supported: path, outbound\nPath: <sip:proxy.example.com;lr>\nExpires: 300\nUser-Agent: baresip\nContent-Length: 0\n\n",
 "invite_sdp": "INVITE sip:2001@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK-inv-1\nMax-Forwards: 70\nFrom: \"Caller\" <sip:+15550100@127.0.0.1>;tag=c1\n"
               "To: <sip:2001@127.0.0.1>\nCall-ID: inv-1@127.0.0.1\nCSeq: 1 INVITE\nContact: <sip:+15550100@127.0.0.1:5070>\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, UPDATE\n"
               "Supported: timer, replaces\nSession-Expires: 1800;refresher=uac\nMin-SE: 90\nContent-Type: application/sdp\nContent-Length: " + str(len(crlf(SDP))) + "\n\n" + SDP,
 "refer": "REFER sip:2001@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ref-1\nMax-Forwards: 70\nFrom: <sip:2001@127.0.0.1>;tag=b1\nTo: <sip:+15550100@127.0.0.1>;tag=c1\n"
          "Call-ID: inv-1@127.0.0.1\nCSeq: 3 REFER\nRefer-To: <sip:2002@127.0.0.1?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>\nReferred-By: <sip:2001@127.0.0.1>\nContent-Length: 0\n\n",
 "info_dtmf": "INFO sip:switchboard@127.0.0.1 SIP/2.0\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-info-1\nMax-Forwards: 70\nFrom: <sip:2001@127.0.0.1>;tag=b1\nTo: <sip:x@127.0.0.1>;tag=c1\n"
              "Call-ID: inv-1@127.0.0.1\nCSeq: 4 INFO\nContent-Type: application/dtmf-relay\nContent-Length: 22\n\nSignal=5\nDuration=160\n",
 "resp_401": "SIP/2.0 401 Unauthorized\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sb-4;received=127.0.0.1;rport=5060\nFrom: <sip:2001@127.0.0.1>;tag=a1\nTo: <sip:2001@127.0.0.1>;tag=x9\n"
             "Call-ID: reg-1@127.0.0.1\nCSeq: 1 REGISTER\nWWW-Authenticate: Digest realm=\"switchboard\", nonce=\"1.abc.def\", qop=\"auth\", algorithm=MD5, stale=FALSE\nContent-Length: 0\n\n",
 "resp_200_sdp": "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sb-5\nRecord-Route: <sip:127.0.0.9;lr>\nFrom: <sip:+15550100@127.0.0.1>;tag=c1\nTo: <sip:2001@127.0.0.1>;tag=b7\n"
                 "Call-ID: inv-2@127.0.0.1\nCSeq: 1 INVITE\nContact: <sip:2001@127.0.0.1:5072>\nSession-Expires: 1800;refresher=uas\nRequire: timer\nContent-Type: application/sdp\nContent-Length: " + str(len(crlf(SDP))) + "\n\n" + SDP,
}

SDPS = {
 "basic": SDP,
 "hold_sendonly": SDP.replace("a=sendrecv", "a=sendonly"),
 "old_hold": SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"),
 "ipv6_g722": "v=0\no=- 7 7 IN IP6 ::1\ns=call\nc=IN IP6 ::1\nt=0 0\nm=audio 7078 RTP/AVP 9 101\na=rtpmap:9 G722/8000\na=rtpmap:101 telephone-event/8000\n",
 "red_dtmf": "v=0\no=- 1 2 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0 99 101\na=rtpmap:99 red/8000\na=fmtp:99 101/101/101\na=rtpmap:101 telephone-event/8000\n",
 "declined": "v=0\no=- 1 2 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 0 RTP/AVP 0\nm=video 5000 RTP/AVP 96\na=rtpmap:96 H264/90000\n",
 "srtp_sdes": "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/SAVP 0 8 101\n"
              "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\na=crypto:2 AEAD_AES_128_GCM inline:kjUkAxyLnLv0GHcZAa1GKgNXaGU8mRbVtYtyrA==\na=rtpmap:101 telephone-event/8000\n",
 "no_voice": "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 18\na=rtpmap:18 G729/8000\n",
 "hostname": "v=0\no=- 1 1 IN IP4 pbx.example.com\ns=-\nc=IN IP4 pbx.example.com\nt=0 0\nm=audio 6000 RTP/AVP 0\n",
}

def rtp(pt, payload, seq=1, ts=160, ssrc=0x1234, marker=False, csrcs=0, ext_words=None, pad=0):
    b0 = 0x80 | csrcs | (0x10 if ext_words is not None else 0) | (0x20 if pad else 0)
    out = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq, ts, ssrc)
    out += b"".join(struct.pack("!I", 0x1000 + i) for i in range(csrcs))
    if ext_words is not None:
        out += struct.pack("!HH", 0xBEDE, ext_words) + b"\x11" * (4 * ext_words)
    out += payload
    if pad:
        out += b"\x00" * (pad - 1) + bytes([pad])
    return out

def event(key, end=False, duration=400):
    return struct.pack("!BBH", key, (0x80 if end else 0) | 10, duration)

RTPS = {
 "pcmu": rtp(0, b"\xff" * 160),
 "event_start_end": rtp(101, event(5), marker=True) + b"\xff\xff" + rtp(101, event(5, True, 800), seq=2),
 "event_ext_pad": rtp(101, event(1), csrcs=2, ext_words=2, pad=4, marker=True),
 "red": rtp(99, b"\xe5\x00\x50\x04" + b"\x65" + event(3) + event(3, True)),
 "rtcp_sr": struct.pack("!BBHIIIIII", 0x81, 200, 12, 0x1234, 0xE0000000, 0, 160, 10, 1600)
            + struct.pack("!IIIIII", 0x5678, 0x01000002, 7, 3, 0, 0) + struct.pack("!BBHIBB", 0x81, 202, 2, 0x1234, 1, 2) + b"sb\x00\x00",
 "rtcp_rr": struct.pack("!BBHI", 0x81, 201, 7, 0x1234) + struct.pack("!IIIIII", 0x5678, 0, 7, 3, 0, 0),
}

def stun(typ, attrs=b"", fingerprint=False):
    import zlib
    txid = bytes(range(1, 13))
    body = attrs
    if fingerprint:
        head = struct.pack("!HHI", typ, len(body) + 8, 0x2112A442) + txid
        crc = (zlib.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += struct.pack("!HHI", 0x8028, 4, crc)
    return struct.pack("!HHI", typ, len(body), 0x2112A442) + txid + body

STUNS = {
 # What an outbound phone sends (RFC 5626 4.4.2): a bare Binding request, one naming
 # its software with a fingerprint, and messages that must get no answer.
 "binding": stun(0x0001),
 "binding_software_fingerprint": stun(0x0001, struct.pack("!HH", 0x8022, 7) + b"baresip\x00", True),
 "binding_success": stun(0x0101, struct.pack("!HHBBH", 0x0020, 8, 0, 1, 0x5E40 ^ 0x2112) + bytes([127 ^ 0x21, 0 ^ 0x12, 0 ^ 0xA4, 1 ^ 0x42])),
 "indication": stun(0x0011),
 "length_past_end": stun(0x0001)[:2] + b"\x00\x40" + stun(0x0001)[4:],
}

def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    for name, text in SIP.items():
        write("sip_message", name, crlf(text))
        # The stream target reads its first byte as the piece size.
        write("sip_stream", name, bytes([7]) + crlf(text) + crlf(text))
    for name, text in SDPS.items():
        write("sdp", name, sdp_bytes(text))
    for name, data in RTPS.items():
        write("rtp", name, data)
    for name, data in STUNS.items():
        write("stun", name, data)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in sorted(glob.glob(os.path.join(repo, "ivr-flows", "**", "*.yaml"), recursive=True)
                       + glob.glob(os.path.join(repo, "tests", "fixtures", "flows-from-docs", "*.yaml"))):
        write("flow_yaml", os.path.relpath(path, repo).replace(os.sep, "_"), open(path, "rb").read())
    for path in sorted(glob.glob(os.path.join(repo, "config", "*.yaml"))
                       + glob.glob(os.path.join(repo, "tests", "fixtures", "*.yaml"))):
        write("config_yaml", os.path.relpath(path, repo).replace(os.sep, "_"), open(path, "rb").read())

main()
