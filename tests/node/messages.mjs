// Anthropic Messages through interlock with the official `@anthropic-ai/sdk` Node SDK:
// messages.create, messages.stream to its final message, a tool round trip (tool_use, then
// tool_result), and messages.countTokens.
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { settings, steps } from './common.mjs';

const { url, model, key } = settings();
const client = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
const weather = {
  name: 'get_weather',
  description: 'Weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

function text(message) {
  return message.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
}

await steps([
  ['messages.create', async () => {
    const { data, response } = await client.messages.create({
      model, max_tokens: 256, messages: [{ role: 'user', content: 'hello from node' }],
    }).withResponse();
    assert.equal(data.type, 'message');
    assert.equal(data.role, 'assistant');
    assert.match(data.id, /^msg_/);
    assert.equal(text(data), 'Fake reply to: hello from node');
    assert.equal(data.stop_reason, 'end_turn');
    assert.ok(data.usage.input_tokens > 0 && data.usage.output_tokens > 0);
    assert.ok(response.headers.get('x-request-id'));
  }],
  ['messages.create with a system prompt and content blocks', async () => {
    const data = await client.messages.create({
      model,
      max_tokens: 256,
      system: [{ type: 'text', text: 'Answer briefly.' }],
      messages: [{ role: 'user', content: [{ type: 'text', text: 'second question' }] }],
    });
    assert.equal(text(data), 'Fake reply to: second question');
  }],
  ['messages.stream finalMessage', async () => {
    const stream = client.messages.stream({
      model, max_tokens: 256, messages: [{ role: 'user', content: 'stream please' }],
    });
    const kinds = new Set();
    let deltas = '';
    stream.on('streamEvent', (event) => {
      kinds.add(event.type);
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') deltas += event.delta.text;
    });
    const final = await stream.finalMessage();
    for (const kind of ['message_start', 'content_block_start', 'content_block_delta', 'message_delta', 'message_stop']) {
      assert.ok(kinds.has(kind), `no ${kind} event (saw ${[...kinds].join(', ')})`);
    }
    assert.equal(deltas, 'Fake reply to: stream please');
    assert.equal(text(final), 'Fake reply to: stream please');
    assert.equal(final.stop_reason, 'end_turn');
    assert.ok(final.usage.output_tokens > 0);
  }],
  ['tool round trip', async () => {
    const question = { role: 'user', content: 'weather in Paris?' };
    const call = await client.messages.create({ model, max_tokens: 256, tools: [weather], messages: [question] });
    assert.equal(call.stop_reason, 'tool_use');
    const uses = call.content.filter((b) => b.type === 'tool_use');
    assert.equal(uses.length, 1, `expected one tool_use block, got ${JSON.stringify(call.content)}`);
    assert.equal(uses[0].name, 'get_weather');
    assert.deepEqual(uses[0].input, { city: 'text' });
    const answer = await client.messages.create({
      model,
      max_tokens: 256,
      tools: [weather],
      messages: [
        question,
        { role: 'assistant', content: call.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: uses[0].id, content: 'sunny, 21 C' }] },
      ],
    });
    assert.equal(answer.stop_reason, 'end_turn');
    assert.equal(text(answer), 'Tool result: sunny, 21 C');
  }],
  ['tool use in a stream', async () => {
    const stream = client.messages.stream({
      model, max_tokens: 256, tools: [weather], messages: [{ role: 'user', content: 'weather in Oslo?' }],
    });
    const final = await stream.finalMessage();
    assert.equal(final.stop_reason, 'tool_use');
    const uses = final.content.filter((b) => b.type === 'tool_use');
    assert.equal(uses.length, 1);
    assert.deepEqual(uses[0].input, { city: 'text' });
  }],
  ['messages.countTokens', async () => {
    const short = await client.messages.countTokens({ model, messages: [{ role: 'user', content: 'hi' }] });
    assert.ok(Number.isInteger(short.input_tokens) && short.input_tokens > 0, JSON.stringify(short));
    const long = await client.messages.countTokens({
      model, tools: [weather], messages: [{ role: 'user', content: 'hi '.repeat(400) }],
    });
    assert.ok(long.input_tokens > short.input_tokens, `${long.input_tokens} <= ${short.input_tokens}`);
  }],
]);
