// The official Java client (org.apache.kafka:kafka-clients) driven the way the project's tests
// need: a synchronous producer that times each request itself, and a consumer that reads a
// topic to its end. Compiled by kstall-testbed (kafka_maven.rs) against the jars of the broker under test.
//
//   KstallClient produce BOOTSTRAP TOPIC COUNT CLIENT_ID [key=value ...]
//     one record per send, each awaited (send().get()): one Produce request per record;
//     prints {"sent":N,"p50_ns":..,"p90_ns":..,"p99_ns":..,"max_ns":..} on stdout
//   KstallClient consume BOOTSTRAP TOPIC EXPECTED CLIENT_ID [key=value ...]
//     reads from the beginning until EXPECTED records (or 120 s); prints {"consumed":N}
// Extra key=value pairs are client properties (security.protocol=SSL, ...).
import java.time.Duration;
import java.util.Arrays;
import java.util.Collections;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class KstallClient {
    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: KstallClient produce|consume BOOTSTRAP TOPIC N CLIENT_ID [key=value ...]");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", args[1]);
        props.put("client.id", args[4]);
        for (int i = 5; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            props.put(kv[0], kv[1]);
        }
        String topic = args[2];
        long n = Long.parseLong(args[3]);
        if (args[0].equals("produce")) {
            produce(props, topic, n);
        } else {
            consume(props, topic, n);
        }
    }

    static void produce(Properties props, String topic, long n) throws Exception {
        props.put("acks", "1");
        props.put("linger.ms", "0");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        long[] took = new long[(int) n];
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            // Metadata first, so the timed sends are Produce round trips only.
            producer.partitionsFor(topic);
            byte[] value = new byte[100];
            for (int i = 0; i < n; i++) {
                long start = System.nanoTime();
                producer.send(new ProducerRecord<>(topic, 0, null, value)).get();
                took[i] = System.nanoTime() - start;
            }
        }
        Arrays.sort(took);
        System.out.printf("{\"sent\":%d,\"p50_ns\":%d,\"p90_ns\":%d,\"p99_ns\":%d,\"max_ns\":%d}%n",
            n, at(took, 0.50), at(took, 0.90), at(took, 0.99), n > 0 ? took[(int) n - 1] : 0);
    }

    static long at(long[] sorted, double q) {
        if (sorted.length == 0) return 0;
        int i = (int) Math.ceil(q * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
    }

    static void consume(Properties props, String topic, long expected) {
        props.put("group.id", props.getProperty("client.id"));
        props.put("auto.offset.reset", "earliest");
        props.put("enable.auto.commit", "false");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer", ByteArrayDeserializer.class.getName());
        long consumed = 0;
        long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(Collections.singletonList(topic));
            while (consumed < expected && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(500));
                consumed += records.count();
            }
        }
        System.out.printf("{\"consumed\":%d}%n", consumed);
    }
}
