// A fake OpenAI-compatible model for the browser tests: it speaks the real streaming wire
// format of POST /v1/chat/completions (server-sent `data:` chunks, tool calls in fragments,
// a usage chunk, then [DONE]).
import http from 'node:http';

function chunk(delta, finish = null) {
  return { choices: [{ index: 0, delta, finish_reason: finish }] };
}

async function send(res, events, pauseMs = 0) {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const e of events) {
    res.write(`data: ${JSON.stringify(e)}\n\n`);
    if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
  }
  res.write('data: [DONE]\n\n');
  res.end();
}

const usage = { choices: [], usage: { prompt_tokens: 30, completion_tokens: 7 } };

function text(words) {
  return [...words.map((w) => chunk({ content: w })), chunk({}, 'stop'), usage];
}

function toolCall(name, args) {
  const json = JSON.stringify(args);
  const half = Math.floor(json.length / 2);
  return [
    chunk({ tool_calls: [{ index: 0, id: 'call_0', type: 'function', function: { name, arguments: json.slice(0, half) } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: json.slice(half) } }] }),
    chunk({}, 'tool_calls'),
    usage,
  ];
}

/** Answers: a tool result is read back; "list files in X" calls the shell; "stream N words"
 * streams N words at 50 a second; anything else is a greeting. */
async function answer(body, res) {
  const messages = body.messages || [];
  const last = messages[messages.length - 1] || {};
  if (last.role === 'tool') {
    const said = String(last.content || '').split(/\s+/).slice(0, 12).join(' ');
    return send(res, text(['The ', 'tool ', 'said: ', said]));
  }
  const prompt = String(last.content || '');
  let m = prompt.match(/^list files in (\S+)/);
  if (m) return send(res, toolCall('shell', { command: `ls ${m[1]}` }));
  m = prompt.match(/^stream (\d+) words/);
  if (m) {
    const words = Array.from({ length: Number(m[1]) }, (_, i) => `w${i} `);
    return send(res, text(words), 20);
  }
  if (prompt.startsWith('draw')) {
    return send(res, toolCall('create_diagram', { source: 'graph LR\n  A[Plan] --> B{Ready?}\n  B -->|yes| C[Ship]', title: 'Release' }));
  }
  return send(res, text(['Hello ', 'from ', 'the ', 'fake ', 'model']));
}

export function startFakeLlm() {
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
      if (req.method !== 'POST' || !req.url.endsWith('/chat/completions')) {
        res.writeHead(404).end();
        return;
      }
      answer(JSON.parse(raw || '{}'), res).catch(() => res.end());
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/v1` }));
  });
}
