package dev.courier.peers;

import java.util.Collection;
import java.util.Map;
import java.util.Optional;

import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.env.MapPropertySource;
import org.springframework.kafka.annotation.EnableKafka;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.config.KafkaListenerEndpointRegistry;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.ConsumerAwareRebalanceListener;
import org.springframework.kafka.support.ProducerListener;
import org.springframework.kafka.transaction.KafkaTransactionManager;

/**
 * Spring for Apache Kafka as a user without Spring Boot writes it: an annotation-config
 * context, {@code @EnableKafka}, one {@code ConcurrentKafkaListenerContainerFactory} and a
 * {@code @KafkaListener} bean. {@code spring} is a record listener answering through
 * {@code @SendTo} ({@link SpringListeners.Replying}); {@code spring-eos} a batch listener
 * whose results and offsets share one Kafka transaction ({@link SpringListeners.BatchInTransaction}).
 */
final class SpringWorker implements Worker {
    private final AnnotationConfigApplicationContext context = new AnnotationConfigApplicationContext();
    private final boolean transactional;

    SpringWorker(Job job, Readiness readiness, Progress progress) {
        this.transactional = job.worker().equals("spring-eos");
        // @KafkaListener and @SendTo name their topics as ${placeholders}, resolved from here.
        context.getEnvironment().getPropertySources().addFirst(new MapPropertySource("peers",
                Map.of("peers.commands", job.commands(), "peers.results", job.results())));
        var beans = context.getBeanFactory();
        beans.registerSingleton("job", job);
        beans.registerSingleton("readiness", readiness);
        beans.registerSingleton("progress", progress);
        context.register(Beans.class, transactional ? SpringListeners.BatchInTransaction.class : SpringListeners.Replying.class);
    }

    @Override
    public void start() {
        // Refreshing starts the listener containers, which is the whole of starting.
        context.refresh();
    }

    @Override
    public Optional<String> broken() {
        if (!context.isActive()) {
            return Optional.empty();
        }
        return context.getBean(KafkaListenerEndpointRegistry.class).getListenerContainers().stream()
                .filter(c -> !c.isInExpectedState())
                .findFirst()
                .map(c -> "Spring listener container " + c.getListenerId() + " stopped on its own");
    }

    @Override
    public void close() {
        // Stops the containers (each finishes its batch and commits), then closes the producers.
        context.close();
    }

    @Configuration
    @EnableKafka
    static class Beans {
        @Bean
        DefaultKafkaProducerFactory<byte[], byte[]> producerFactory(Job job) {
            var factory = new DefaultKafkaProducerFactory<byte[], byte[]>(Clients.producer(job));
            if (job.worker().equals("spring-eos")) {
                // Makes every producer transactional; Spring appends a number per consumer thread.
                factory.setTransactionIdPrefix("peers-" + job.group() + "-");
            }
            return factory;
        }

        @Bean
        KafkaTemplate<byte[], byte[]> kafkaTemplate(DefaultKafkaProducerFactory<byte[], byte[]> producers, Progress progress) {
            var template = new KafkaTemplate<>(producers);
            // The only place an @SendTo reply's acknowledgement can be seen: the listener
            // returns before it, and Spring does not wait for it before committing.
            template.setProducerListener(new ProducerListener<>() {
                @Override
                public void onSuccess(ProducerRecord<byte[], byte[]> record, RecordMetadata metadata) {
                    progress.acked();
                }

                @Override
                public void onError(ProducerRecord<byte[], byte[]> record, RecordMetadata metadata, Exception e) {
                    // Spring would log this and go on, with the command's offset committed
                    // or about to be: the result is lost. The benchmark stops instead.
                    progress.failed("Spring could not send a result", e);
                }
            });
            return template;
        }

        @Bean
        ConcurrentKafkaListenerContainerFactory<byte[], byte[]> kafkaListenerContainerFactory(
                Job job, Readiness readiness, DefaultKafkaProducerFactory<byte[], byte[]> producers,
                KafkaTemplate<byte[], byte[]> template) {
            var factory = new ConcurrentKafkaListenerContainerFactory<byte[], byte[]>();
            factory.setConsumerFactory(new DefaultKafkaConsumerFactory<>(Clients.consumer(job)));
            factory.setConcurrency(job.concurrency());
            factory.getContainerProperties().setConsumerRebalanceListener(new ReadinessAdapter(readiness));
            if (job.worker().equals("spring-eos")) {
                factory.setBatchListener(true);
                // The container begins a transaction per poll's batch; the listener's sends
                // and the batch's offsets (sendOffsetsToTransaction) commit together.
                factory.getContainerProperties().setKafkaAwareTransactionManager(new KafkaTransactionManager<>(producers));
            } else {
                factory.setReplyTemplate(template);
            }
            return factory;
        }
    }

    /** Spring hands each rebalance the consumer it concerns, which is what Readiness counts by. */
    private record ReadinessAdapter(Readiness readiness) implements ConsumerAwareRebalanceListener {
        @Override
        public void onPartitionsAssigned(Consumer<?, ?> consumer, Collection<TopicPartition> tps) {
            readiness.assigned(consumer, tps);
        }

        @Override
        public void onPartitionsRevokedAfterCommit(Consumer<?, ?> consumer, Collection<TopicPartition> tps) {
            readiness.revoked(consumer, tps);
        }

        @Override
        public void onPartitionsLost(Consumer<?, ?> consumer, Collection<TopicPartition> tps) {
            readiness.revoked(consumer, tps);
        }
    }
}
