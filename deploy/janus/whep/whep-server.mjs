// WHEP playback of a published avatar, served by Janus (deploy/janus/README.md).
//
//   node whep-server.mjs --janus ws://127.0.0.1:8188 --room 1234 --feed 4242 \
//        [--secret S] [--port 7090] [--endpoint avatar] [--mountpoint 4242] [--token T]
//
// The avatar server publishes into a VideoRoom with a fixed publisher id (--feed, the
// publication's "feed"). This script keeps that publisher RTP-forwarded into a Streaming
// mountpoint (VP8 + Opus, the latest keyframe buffered so a new viewer starts at once) and
// serves the mountpoint with Meetecho's janus-whep-server: any standard WHEP player (client
// offer, 201 answer) plays http://HOST:PORT/whep/endpoint/ENDPOINT from Janus, not from the
// avatar server. The publisher may come and go (a restart of either side): every 2 s the
// forwarders are checked and made again when missing.
import Janode from 'janode';
import StreamingPlugin from 'janode/plugins/streaming';
import VideoRoomPlugin from 'janode/plugins/videoroom';
import { JanusWhepServer } from 'janus-whep-server';

function options(argv) {
  const out = { janus: 'ws://127.0.0.1:8188', port: 7090, endpoint: 'avatar' };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!['janus', 'room', 'feed', 'secret', 'port', 'endpoint', 'mountpoint', 'token'].includes(key))
      throw new Error(`unknown option ${argv[i]}`);
    out[key] = argv[i + 1];
  }
  if (!out.room || !out.feed) throw new Error('--room and --feed are required');
  out.room = Number(out.room);
  out.feed = Number(out.feed);
  out.port = Number(out.port);
  out.mountpoint = Number(out.mountpoint || out.feed);
  return out;
}

const opts = options(process.argv);
const VIDEO_PORT = 10000 + (opts.mountpoint % 20000) * 2;  // even ports, one pair per mountpoint
const AUDIO_PORT = VIDEO_PORT + 1;

const connection = await Janode.connect({ is_admin: false, address: { url: opts.janus } });
const session = await connection.create();
const streaming = await session.attach(StreamingPlugin);
try {
  await streaming.createRtpMountpoint({
    id: opts.mountpoint,
    name: opts.endpoint,
    media: [
      { type: 'video', mid: 'v', codec: 'vp8', port: VIDEO_PORT, pt: 96, bufferkf: true },
      { type: 'audio', mid: 'a', codec: 'opus', port: AUDIO_PORT, pt: 111 },
    ],
  });
  console.log(`mountpoint ${opts.mountpoint}: video ${VIDEO_PORT}, audio ${AUDIO_PORT}`);
} catch (e) {
  console.log(`mountpoint ${opts.mountpoint}: ${e.message} (kept as it is)`);
}
const room = await session.attach(VideoRoomPlugin);
const secret = opts.secret ? { secret: opts.secret } : {};

async function keepForwarding() {
  try {
    const { participants = [] } = await room.listParticipants({ room: opts.room, ...secret });
    const publisher = participants.find(p => p.feed === opts.feed || p.id === opts.feed);
    if (!publisher || publisher.publisher === false) return;
    const { forwarders = [] } = await room.listForward({ room: opts.room, ...secret });
    if (forwarders.some(f => (f.feed ?? f.publisher_id) === opts.feed)) return;
    await room.startForward({
      room: opts.room,
      feed: opts.feed,
      host: '127.0.0.1',
      streams: [{ mid: '0', port: VIDEO_PORT }, { mid: '1', port: AUDIO_PORT }],
      ...secret,
    });
    console.log(`forwarding feed ${opts.feed} of room ${opts.room} to mountpoint ${opts.mountpoint}`);
  } catch (e) {
    console.log(`forwarder check: ${e.message}`);
  }
}
await keepForwarding();
setInterval(keepForwarding, 2000);

const server = new JanusWhepServer({ janus: { address: opts.janus }, rest: { port: opts.port, basePath: '/whep' } });
await server.start();
server.createEndpoint({ id: opts.endpoint, plugin: 'streaming', mountpoint: opts.mountpoint, token: opts.token });
console.log(`WHEP: http://127.0.0.1:${opts.port}/whep/endpoint/${opts.endpoint}`);
