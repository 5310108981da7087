/* Kernel forwarding of plain bridged RTP: a tc ingress program.
 *
 * For a same-codec bridge with nothing tapping it, the relay puts one entry per
 * direction in `streams`, keyed by the address of our socket the packets arrive at.
 * A packet that matches (from the latched peer, with the expected SSRC, not an
 * RFC 4733 event) is rewritten here exactly as the relay's StreamRewriter would:
 * our SSRC, sequence number and timestamp shifted by the same offsets, sent from our
 * other leg's socket to the other peer. Anything else goes on up to the relay's
 * socket untouched: RTCP (another port), key events, a new source or SSRC, a restart
 * of the sequence numbers, IPv6. Untouched packets leave with TC_ACT_UNSPEC, so any
 * other tc program on the interface still sees them.
 *
 * The entry also keeps what the relay's reception statistics would have counted
 * (packets, highest sequence number, RFC 3550 jitter) so the call record and RTCP
 * stay right, and the newest outgoing sequence number and timestamp so the relay
 * carries on seamlessly when it takes the stream back. Built by build.rs with
 * clang -target bpf; the layouts are mirrored in kernel.rs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct stream_key {
	__u32 addr; /* our socket's IPv4 address (network order); 0: bound to all */
	__u16 port; /* its port (network order) */
	__u16 pad;
};

struct stream {
	/* Set by the relay. Addresses and ports in network order. */
	__u32 peer_addr;  /* the one source accepted: the leg's latched peer */
	__u32 out_saddr;  /* our socket on the other leg */
	__u32 out_daddr;  /* the other leg's peer */
	__u16 peer_port;
	__u16 out_sport;
	__u16 out_dport;
	__u8 event_pt;    /* RFC 4733 events stay with the relay; 0xff: none */
	__u8 pad0;
	__u32 in_ssrc;    /* network order, as on the wire */
	__u32 out_ssrc;   /* network order */
	__u32 ts_offset;
	__u16 seq_offset;
	__u16 pad1;
	__u32 out_ifindex; /* 0: the other peer is on this host; else the interface to it */
	/* Kept here. */
	__u64 packets;
	__u64 octets;     /* payload octets sent */
	__u64 last_ns;    /* arrival of the newest packet (CLOCK_MONOTONIC) */
	__u32 max_seq;    /* highest input sequence number, with the wrap count above */
	__u32 last_ts;    /* newest outgoing timestamp */
	__u16 last_seq;   /* newest outgoing sequence number */
	__u16 pad2;
	__u32 transit;    /* previous transit time in RTP units (RFC 3550 A.8) */
	__u64 jitter16;   /* jitter estimate x16 */
	__u64 jitter_sum;
	__u64 jitter_samples;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192); /* set at load to the RTP port pairs */
	__type(key, struct stream_key);
	__type(value, struct stream);
} streams SEC(".maps");

#define IP_CSUM (ETH_HLEN + offsetof(struct iphdr, check))
#define UDP_OFF (ETH_HLEN + sizeof(struct iphdr))
#define UDP_CSUM (UDP_OFF + offsetof(struct udphdr, check))
#define RTP_OFF (UDP_OFF + sizeof(struct udphdr))
#define RTP_HEADER_LEN 12
/* RFC 3550's MAX_DROPOUT and MAX_MISORDER, as the relay's statistics use them. */
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define LOOPBACK_IFINDEX 1
/* Not ours: on to whatever else the interface runs, then the stack. */
#define PASS TC_ACT_UNSPEC

/* Replaces a 16- or 32-bit field, keeping the UDP checksum right (and a zero,
 * "no checksum", zero). */
static __always_inline int put(struct __sk_buff *skb, __u32 off, __u32 old, __u32 new,
			       __u32 size, __u64 csum_flags)
{
	if (old == new)
		return 0;
	if (bpf_l4_csum_replace(skb, UDP_CSUM, old, new, size | csum_flags | BPF_F_MARK_MANGLED_0))
		return -1;
	/* The csum_replace above has kept skb->csum right already. */
	return bpf_skb_store_bytes(skb, off, &new, size, 0);
}

static __always_inline int put_addr(struct __sk_buff *skb, __u32 off, __u32 old, __u32 new)
{
	if (old == new)
		return 0;
	if (bpf_l3_csum_replace(skb, IP_CSUM, old, new, 4))
		return -1;
	return put(skb, off, old, new, 4, BPF_F_PSEUDO_HDR);
}

SEC("classifier")
int forward_rtp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	struct udphdr *udp = data + UDP_OFF;
	__u8 *rtp = data + RTP_OFF;

	if ((void *)(rtp + RTP_HEADER_LEN) > end)
		return PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return PASS;
	/* Fragments go up whole. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return PASS;

	struct stream_key key = { .addr = ip->daddr, .port = udp->dest };
	struct stream *s = bpf_map_lookup_elem(&streams, &key);
	if (!s) {
		/* A socket bound to every address (0.0.0.0) is keyed by its port alone. */
		key.addr = 0;
		s = bpf_map_lookup_elem(&streams, &key);
	}
	if (!s)
		return PASS;
	if (ip->saddr != s->peer_addr || udp->source != s->peer_port)
		return PASS;
	/* A packet from our own address to a local peer is only taken on loopback: coming
	 * in on another interface it would be a martian to IP. (The relay hands over no
	 * such stream; this keeps a stray one from being lost.) */
	if (!s->out_ifindex && skb->ingress_ifindex != LOOPBACK_IFINDEX)
		return PASS;
	/* Version 2, no CSRCs (the relay handles mixers' packets), not an event. */
	if ((rtp[0] & 0xcf) != 0x80 || (rtp[1] & 0x7f) == s->event_pt)
		return PASS;
	__u32 ssrc = *(__u32 *)(rtp + 8);
	if (ssrc != s->in_ssrc)
		return PASS;

	__u16 seq = bpf_ntohs(*(__u16 *)(rtp + 2));
	__u32 ts = bpf_ntohl(*(__u32 *)(rtp + 4));
	__u32 saddr = ip->saddr, daddr = ip->daddr;
	__u16 sport = udp->source, dport = udp->dest;
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(struct udphdr) + RTP_HEADER_LEN)
		return PASS;
	__u32 payload = udp_len - sizeof(struct udphdr) - RTP_HEADER_LEN;

	/* Reception statistics, as the relay's ReceiveStats counts them. */
	__u64 now = bpf_ktime_get_ns();
	__u16 max = (__u16)s->max_seq;
	__u16 ahead = seq - max;
	/* A jump too far either way: the sender restarted its numbering. The relay
	 * counts that afresh, and takes the stream back when it sees it. */
	if (ahead >= MAX_DROPOUT && ahead <= 0xffff - MAX_MISORDER)
		return PASS;
	if (ahead != 0 && ahead < MAX_DROPOUT) {
		__u32 ext = (s->max_seq & ~0xffffu) | seq;
		if (seq < max)
			ext += 0x10000;
		s->max_seq = ext;
	}
	__u32 arrival = (__u32)(now / 125000); /* 8 kHz units */
	__u32 transit = arrival - ts;
	if (s->last_ns) {
		__s32 d = (__s32)(transit - s->transit);
		__u64 ad = d < 0 ? (__u64)(-(__s64)d) : (__u64)d;
		__u64 j = s->jitter16 + ad - (s->jitter16 + 8) / 16;
		s->jitter16 = j;
		s->jitter_sum += j;
		s->jitter_samples += 1;
	}
	s->transit = transit;

	__u16 out_seq = seq + s->seq_offset;
	__u32 out_ts = ts + s->ts_offset;
	if ((__s16)(out_seq - s->last_seq) > 0)
		s->last_seq = out_seq;
	if ((__s32)(out_ts - s->last_ts) > 0)
		s->last_ts = out_ts;
	s->last_ns = now;

	/* Every pointer into the packet is stale after the first helper that writes. */
	if (put(skb, RTP_OFF + 2, bpf_htons(seq), bpf_htons(out_seq), 2, 0) ||
	    put(skb, RTP_OFF + 4, bpf_htonl(ts), bpf_htonl(out_ts), 4, 0) ||
	    put(skb, RTP_OFF + 8, ssrc, s->out_ssrc, 4, 0) ||
	    put(skb, UDP_OFF + offsetof(struct udphdr, source), sport, s->out_sport, 2, 0) ||
	    put(skb, UDP_OFF + offsetof(struct udphdr, dest), dport, s->out_dport, 2, 0) ||
	    put_addr(skb, ETH_HLEN + offsetof(struct iphdr, saddr), saddr, s->out_saddr) ||
	    put_addr(skb, ETH_HLEN + offsetof(struct iphdr, daddr), daddr, s->out_daddr))
		return TC_ACT_SHOT; /* half rewritten: better lost than misdelivered */

	__sync_fetch_and_add(&s->packets, 1);
	__sync_fetch_and_add(&s->octets, payload);

	/* A peer on this host: the stack delivers the rewritten packet to its socket. A
	 * peer elsewhere: out of the interface the relay's own packets take, through the
	 * kernel's route and neighbour tables (which needs no IP forwarding on the host). */
	if (s->out_ifindex)
		return bpf_redirect_neigh(s->out_ifindex, 0, 0, 0);
	return TC_ACT_OK;
}

/* The kernel lends some helpers (bpf_redirect_neigh among them) only to programs under
 * a GPL-compatible licence: this one file is offered under MIT as well, which sits with
 * the project's Apache-2.0. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
