// Chat Completions through interlock with the official `openai` Node SDK: a plain request
// and a stream (with usage), checked against the deterministic fake upstream's answers.
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { settings, steps } from './common.mjs';

const { url, model, key } = settings();
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
const messages = [{ role: 'user', content: 'hello from node' }];
const expected = 'Fake reply to: hello from node';

await steps([
  ['chat.completions.create', async () => {
    const { data, response } = await client.chat.completions.create({ model, messages }).withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices.length, 1);
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].message.content, expected);
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.ok(data.usage.prompt_tokens > 0 && data.usage.completion_tokens > 0);
    assert.equal(data.usage.total_tokens, data.usage.prompt_tokens + data.usage.completion_tokens);
    assert.ok(response.headers.get('x-request-id'));
    assert.ok(response.headers.get('x-interlock-provider'));
  }],
  ['chat.completions.create stream', async () => {
    const stream = await client.chat.completions.create({
      model, messages, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      assert.equal(chunk.object, 'chat.completion.chunk');
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? '';
        finish = choice.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(chunks > 2, `only ${chunks} chunks`);
    assert.equal(text, expected);
    assert.equal(finish, 'stop');
    assert.ok(usage && usage.completion_tokens > 0, 'no usage chunk');
  }],
  ['chat.completions.stream finalChatCompletion', async () => {
    const stream = client.chat.completions.stream({ model, messages });
    const final = await stream.finalChatCompletion();
    assert.equal(final.choices[0].message.content, expected);
  }],
]);
