// The Responses API through interlock with the official `openai` Node SDK: a plain request,
// a stream read to its final response, a function tool round trip (function_call, then
// function_call_output on previous_response_id), and a conversation continued by id.
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { settings, steps } from './common.mjs';

const { url, model, key } = settings();
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
const weather = {
  type: 'function',
  name: 'get_weather',
  description: 'Weather for a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
    additionalProperties: false,
  },
  strict: true,
};

function messageText(response) {
  const texts = [];
  for (const item of response.output) {
    if (item.type !== 'message') continue;
    assert.equal(item.role, 'assistant');
    for (const part of item.content) {
      if (part.type === 'output_text') texts.push(part.text);
    }
  }
  return texts.join('');
}

let first = null;

await steps([
  ['responses.create', async () => {
    const { data, response } = await client.responses.create({ model, input: 'hello from node' }).withResponse();
    assert.equal(data.object, 'response');
    assert.equal(data.status, 'completed');
    assert.match(data.id, /^resp_/);
    assert.equal(messageText(data), 'Fake reply to: hello from node');
    assert.equal(data.output_text, 'Fake reply to: hello from node'); // the SDK's own aggregate
    assert.ok(data.usage.input_tokens > 0 && data.usage.output_tokens > 0);
    assert.equal(data.usage.total_tokens, data.usage.input_tokens + data.usage.output_tokens);
    assert.ok(response.headers.get('x-request-id'));
    first = data;
  }],
  ['responses.create with instructions and message input', async () => {
    const data = await client.responses.create({
      model,
      instructions: 'Answer briefly.',
      input: [{ role: 'user', content: [{ type: 'input_text', text: 'second question' }] }],
    });
    assert.equal(data.output_text, 'Fake reply to: second question');
  }],
  ['responses.stream finalResponse', async () => {
    const stream = client.responses.stream({ model, input: 'stream please' });
    const kinds = new Set();
    let deltas = '';
    for await (const event of stream) {
      kinds.add(event.type);
      if (event.type === 'response.output_text.delta') deltas += event.delta;
    }
    const final = await stream.finalResponse();
    for (const kind of ['response.created', 'response.output_text.delta', 'response.completed']) {
      assert.ok(kinds.has(kind), `no ${kind} event (saw ${[...kinds].join(', ')})`);
    }
    assert.equal(deltas, 'Fake reply to: stream please');
    assert.equal(final.status, 'completed');
    assert.equal(messageText(final), 'Fake reply to: stream please');
    assert.ok(final.usage && final.usage.output_tokens > 0, 'no usage on the final response');
  }],
  ['responses.create stream: true', async () => {
    const stream = await client.responses.create({ model, input: 'raw events', stream: true });
    let completed = null;
    let lastSequence = -1;
    for await (const event of stream) {
      assert.ok(event.sequence_number > lastSequence, 'sequence numbers must increase');
      lastSequence = event.sequence_number;
      if (event.type === 'response.completed') completed = event.response;
    }
    assert.ok(completed, 'no response.completed event');
    assert.equal(messageText(completed), 'Fake reply to: raw events');
  }],
  ['function tool round trip with previous_response_id', async () => {
    const call = await client.responses.create({ model, input: 'weather in Paris?', tools: [weather] });
    const calls = call.output.filter((item) => item.type === 'function_call');
    assert.equal(calls.length, 1, `expected one function_call, got ${JSON.stringify(call.output)}`);
    assert.equal(calls[0].name, 'get_weather');
    assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'text' });
    assert.ok(calls[0].call_id);
    const answer = await client.responses.create({
      model,
      previous_response_id: call.id,
      tools: [weather],
      input: [{ type: 'function_call_output', call_id: calls[0].call_id, output: 'sunny, 21 C' }],
    });
    assert.equal(answer.status, 'completed');
    assert.equal(answer.previous_response_id, call.id);
    assert.equal(answer.output_text, 'Tool result: sunny, 21 C');
  }],
  ['function tool round trip in a stream', async () => {
    const stream = client.responses.stream({ model, input: 'weather in Oslo?', tools: [weather] });
    const final = await stream.finalResponse();
    const calls = final.output.filter((item) => item.type === 'function_call');
    assert.equal(calls.length, 1);
    assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'text' });
  }],
  ['previous_response_id carries the conversation', async () => {
    const next = await client.responses.create({ model, previous_response_id: first.id, input: 'and then?' });
    assert.equal(next.output_text, 'Fake reply to: and then?');
    assert.equal(next.previous_response_id, first.id);
    // the upstream saw the earlier turns too, so the prompt is longer than this turn alone
    const alone = await client.responses.create({ model, input: 'and then?' });
    assert.ok(next.usage.input_tokens > alone.usage.input_tokens,
      `input_tokens ${next.usage.input_tokens} with history, ${alone.usage.input_tokens} without`);
  }],
  ['responses.retrieve', async () => {
    const again = await client.responses.retrieve(first.id);
    assert.equal(again.id, first.id);
    assert.equal(messageText(again), 'Fake reply to: hello from node');
  }],
]);
