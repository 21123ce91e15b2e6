// Calls waiting for a worker: first in, first out, bounded by count and by the input bytes they hold.
import type { Job } from './job.ts';

export class JobQueue {
  readonly #jobs: Job[] = [];
  #bytes = 0;
  readonly maxJobs: number;
  readonly maxBytes: number;

  constructor(maxJobs: number, maxBytes: number) {
    this.maxJobs = maxJobs;
    this.maxBytes = maxBytes;
  }

  get length(): number {
    return this.#jobs.length;
  }

  /** Input bytes the waiting calls hold. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Why a call carrying `inputBytes` cannot wait here now, or null when it can. */
  refusal(inputBytes: number): string | null {
    if (this.#jobs.length >= this.maxJobs) return `${this.#jobs.length} calls are waiting`;
    if (this.#bytes + inputBytes > this.maxBytes) {
      return `the waiting calls hold ${this.#bytes} bytes of input (QUEUE_MAX_BYTES ${this.maxBytes})`;
    }
    return null;
  }

  push(job: Job): void {
    this.#jobs.push(job);
    this.#bytes += job.task.inputBytes;
  }

  /** Back at the front, in order (calls taken back from a worker were first in line). */
  unshift(...jobs: Job[]): void {
    this.#jobs.unshift(...jobs);
    for (const job of jobs) this.#bytes += job.task.inputBytes;
  }

  peek(): Job | undefined {
    return this.#jobs[0];
  }

  shift(): Job | undefined {
    const job = this.#jobs.shift();
    if (job) this.#bytes -= job.task.inputBytes;
    return job;
  }

  /** False when the job was not waiting here. */
  remove(job: Job): boolean {
    const index = this.#jobs.indexOf(job);
    if (index === -1) return false;
    this.#jobs.splice(index, 1);
    this.#bytes -= job.task.inputBytes;
    return true;
  }

  includes(job: Job): boolean {
    return this.#jobs.includes(job);
  }

  drainAll(): Job[] {
    this.#bytes = 0;
    return this.#jobs.splice(0);
  }
}
